"""``actions.add_events`` on a real PostgreSQL: events keyed by (action, event, host) whatever order their start
and finish arrive in, alone or in batches, and events of a request without an action go to the latest action."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from common.db import actions

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
