"""``actions.add_events`` on a real PostgreSQL: events keyed by (action, event, host) whatever order their start
and finish arrive in, alone, in batches or at once, and events of a request without an action go to the latest
action; the same upsert inside an instance update; the migration that made the key."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from common.db import actions, instances, migrate

pytestmark = pytest.mark.functional

T0 = datetime(2026, 11, 21, 12, 0, 0, tzinfo=UTC)


def at(seconds: float) -> str:
    return (T0 + timedelta(seconds=seconds)).isoformat()


async def events_of(conn: asyncpg.Connection, request_id: str) -> dict[tuple[str, str], tuple]:
    rows = await conn.fetch(
        "SELECT e.event, e.host, e.result, e.details, e.start_time, e.finish_time FROM instance_action_events e"
        " JOIN instance_actions a ON a.id = e.action_id WHERE a.request_id = $1",
        request_id,
    )
    return {(r["event"], r["host"]): (r["result"], r["details"], r["start_time"], r["finish_time"]) for r in rows}


async def test_events_merge_whatever_the_order_and_batching(stratus_db):
    conn = await asyncpg.connect(stratus_db)
    try:
        await conn.execute(
            "INSERT INTO instances (id, project_id, user_id, name, hostname, flavor_id, flavor, vm_state)"
            " VALUES ('i1', 'p', 'u', 'vm', 'vm', '1', '{}', 'building')"
        )
        await actions.start_action(conn, instance_id="i1", request_id="req-1", action="create", project_id="p",
                                   user_id="u")  # fmt: skip
        ev = actions.add_events

        # A finish that arrives before its start creates the row; the late start only sets the start time.
        await ev(conn, "i1", "req-1", [{"event": "build", "result": "Success", "host": "h1", "at": at(5)}])
        await ev(conn, "i1", "req-1", [{"event": "build", "result": "start", "host": "h1", "at": at(1)}])
        # Start, then finish (with details), in two batches.
        await ev(conn, "i1", "req-1", [{"event": "spawn", "result": "start", "host": "h1", "at": at(2)}])
        await ev(conn, "i1", "req-1", [{"event": "spawn", "result": "Error", "host": "h1", "at": at(3),
                                        "details": "no room"}])  # fmt: skip
        # Start and finish in one batch, finish listed first; the same event on another host is its own row.
        await ev(conn, "i1", "req-1", [{"event": "net", "result": "Success", "host": "h2", "at": at(4)},
                                       {"event": "net", "result": "start", "host": "h2", "at": at(3)},
                                       {"event": "net", "result": "start", "host": "h1", "at": at(1)}])  # fmt: skip
        # Several existing rows updated by one batch: an earlier start, and a finish for the open one.
        await ev(conn, "i1", "req-1", [{"event": "build", "result": "start", "host": "h1", "at": at(0)},
                                       {"event": "net", "result": "Success", "host": "h1", "at": at(2)}])  # fmt: skip
        # A request without an action of its own: its events go to the latest action.
        await ev(conn, "i1", "req-unknown", [{"event": "late", "result": "Success", "host": "h3", "at": at(9)}])

        got = await events_of(conn, "req-1")
        t = lambda s: T0 + timedelta(seconds=s)  # noqa: E731
        assert got == {
            ("build", "h1"): ("Success", None, t(0), t(5)),
            ("spawn", "h1"): ("Error", "no room", t(2), t(3)),
            ("net", "h2"): ("Success", None, t(3), t(4)),
            ("net", "h1"): ("Success", None, t(1), t(2)),
            ("late", "h3"): ("Success", None, t(9), t(9)),
        }
        assert await conn.fetchval("SELECT count(*) FROM instance_action_events") == 5
        await ev(conn, "i1", "req-1", [])  # nothing to record: no statement, no change
        assert await events_of(conn, "req-1") == got
    finally:
        await conn.close()


async def new_instance(conn: asyncpg.Connection, iid: str, request_id: str) -> None:
    await conn.execute(
        "INSERT INTO instances (id, project_id, user_id, name, hostname, flavor_id, flavor, vm_state, task_state)"
        " VALUES ($1, 'p', 'u', 'vm', 'vm', '1', '{}', 'building', 'spawning')",
        iid,
    )
    await actions.start_action(conn, instance_id=iid, request_id=request_id, action="create", project_id="p",
                               user_id="u")  # fmt: skip


async def test_an_update_records_its_steps_and_its_outcome_only_when_it_applies(stratus_db):
    """``instances.update`` with events, one statement and no transaction: the steps go in either way; the
    event explaining the change (merged with a start of the same key) and the action's end only with it."""
    conn = await asyncpg.connect(stratus_db)
    try:
        await new_instance(conn, "i1", "req-1")
        steps = [{"event": "build", "result": "start", "host": "h1", "at": at(1)},
                 {"event": "spawn", "result": "start", "host": "h1", "at": at(2)},
                 {"event": "spawn", "result": "Success", "host": "h1", "at": at(3)}]  # fmt: skip
        outcome = [{"event": "build", "result": "Success", "host": "h1", "at": at(4)}]

        # The guard does not match: the steps are recorded (the build's start alone), the outcome is not.
        row = await instances.update(conn, "i1", {"vm_state": "active", "task_state": None},
                                     expected_task_state=["networking"], request_id="req-1", finish_action=True,
                                     events=steps, events_if_applied=outcome)  # fmt: skip
        assert row is None
        t = lambda s: T0 + timedelta(seconds=s)  # noqa: E731
        assert await events_of(conn, "req-1") == {
            ("build", "h1"): (None, None, t(1), None),
            ("spawn", "h1"): ("Success", None, t(2), t(3)),
        }
        assert (await actions.get_action(conn, "i1", "req-1"))["finish_time"] is None

        # It matches: the outcome is recorded on the same row, and the action ends.
        row = await instances.update(conn, "i1", {"vm_state": "active", "task_state": None},
                                     expected_task_state=["spawning"], request_id="req-1", finish_action=True,
                                     events=steps, events_if_applied=outcome)  # fmt: skip
        assert row is not None and row["vm_state"] == "active"
        assert await events_of(conn, "req-1") == {
            ("build", "h1"): ("Success", None, t(1), t(4)),
            ("spawn", "h1"): ("Success", None, t(2), t(3)),
        }
        assert (await actions.get_action(conn, "i1", "req-1"))["finish_time"] is not None
        assert await conn.fetchval("SELECT count(*) FROM instance_action_events") == 2
    finally:
        await conn.close()


async def test_a_start_and_its_finish_written_at_once_make_one_row(stratus_db):
    """Two writers of one key at the same moment (two conductors, each with a cast): the key's unique index
    orders them, and the row ends with both the start and the outcome whichever commits first."""
    conns = [await asyncpg.connect(stratus_db) for _ in range(2)]
    try:
        for n in range(20):
            await new_instance(conns[0], f"i{n}", f"req-{n}")
            start = {"event": "build", "result": "start", "host": "h1", "at": at(1)}
            finish = {"event": "build", "result": "Error", "host": "h1", "at": at(2), "details": "boom"}
            await asyncio.gather(actions.add_events(conns[0], f"i{n}", f"req-{n}", [start]),
                                 actions.add_events(conns[1], f"i{n}", f"req-{n}", [finish]))  # fmt: skip
            assert await events_of(conns[0], f"req-{n}") == {
                ("build", "h1"): ("Error", "boom", T0 + timedelta(seconds=1), T0 + timedelta(seconds=2))
            }
    finally:
        for c in conns:
            await c.close()


async def test_an_event_written_whole_again_keeps_both_details(stratus_db):
    """A scheduler's choice is written whole (``ONE_SHOT_CONFLICT``); written again for the same action and host
    (a reschedule), the row keeps the first details and the second, and the latest outcome."""
    conn = await asyncpg.connect(stratus_db)
    try:
        await new_instance(conn, "i1", "req-1")
        for result, details in (("Success", "chose host c1 (attempt 1)"), ("Error", "No valid host was found")):
            await conn.execute(
                "INSERT INTO instance_action_events AS e (action_id, event, host, result, details, start_time,"
                " finish_time) SELECT id, 'select', 's1', $2, $3, now(), now() FROM instance_actions"
                f" WHERE instance_id = $1 {actions.ONE_SHOT_CONFLICT}",
                "i1", result, details,
            )  # fmt: skip
        (got,) = (await events_of(conn, "req-1")).values()
        assert got[:2] == ("Error", "chose host c1 (attempt 1); No valid host was found")
    finally:
        await conn.close()


async def test_the_key_migration_merges_rows_an_older_version_wrote_twice(stratus_db):
    """0008 on a database whose events repeat a key (a scheduler's event per attempt, before the key existed):
    one row is left, with both details in order and the last outcome."""
    conn = await asyncpg.connect(stratus_db)
    try:
        await new_instance(conn, "i1", "req-1")
        await conn.execute(
            "DROP INDEX instance_action_events_key;"
            " CREATE INDEX instance_action_events_action_idx ON instance_action_events (action_id);"
            " DELETE FROM schema_migrations WHERE version = '0008_action_event_key'"
        )
        for n, (result, details) in enumerate((("Success", "chose c1"), ("Error", "no host")), start=1):
            await conn.execute(
                "INSERT INTO instance_action_events (action_id, event, host, result, details, start_time,"
                " finish_time) SELECT id, 'select', 's1', $2, $3, $4, $4 FROM instance_actions WHERE instance_id = $1",
                "i1", result, details, T0 + timedelta(seconds=n),
            )  # fmt: skip
        assert await migrate.sync(stratus_db) == ["0008_action_event_key"]
        assert await events_of(conn, "req-1") == {
            ("select", "s1"): ("Error", "chose c1; no host", T0 + timedelta(seconds=1), T0 + timedelta(seconds=2))
        }
    finally:
        await conn.close()


async def test_overlapping_batches_take_their_keys_in_one_order(stratus_db):
    """Two batches with the same keys listed in opposite orders (a timed flush of a build's steps and its final
    update, applied at once) take the keys' locks in key order, so neither waits for the other while holding a key
    the other needs: no deadlock. With the rows in the order given, the second writer here deadlocks."""
    a, b = await asyncpg.connect(stratus_db), await asyncpg.connect(stratus_db)
    try:
        await new_instance(a, "i1", "req-1")
        first = {"event": "compute_build_disk", "result": "start", "host": "h1", "at": at(1)}
        second = {"event": "compute_build_spawn", "result": "start", "host": "h1", "at": at(2)}
        ta, tb = a.transaction(), b.transaction()
        await ta.start()
        await tb.start()
        await actions.add_events(a, "i1", "req-1", [first])  # a holds the first key
        # b's batch lists the second key first: taken in that order, b would hold it while waiting for a.
        waiting = asyncio.ensure_future(actions.add_events(b, "i1", "req-1", [second | {"result": "Success"}, first]))
        await asyncio.sleep(0.3)
        assert not waiting.done()
        await actions.add_events(a, "i1", "req-1", [second])  # a needs the second key: free, since b waits on the first
        await ta.commit()
        await waiting
        await tb.commit()
        got = await events_of(a, "req-1")
        assert got[("compute_build_spawn", "h1")][0] == "Success" and got[("compute_build_disk", "h1")][0] is None
    finally:
        await a.close()
        await b.close()
