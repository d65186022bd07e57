"""Instance actions and their events: the per-request, per-step record users read to diagnose."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import asyncpg

__all__ = [
    "ACTION_OF",
    "FINISH_ACTION",
    "ONE_SHOT_CONFLICT",
    "START_ACTION",
    "UPSERT_EVENTS",
    "add_event",
    "add_events",
    "event_arrays",
    "finish_action",
    "get_action",
    "list_actions",
    "list_events",
    "start_action",
    "upsert_events_sql",
]


START_ACTION = (
    "INSERT INTO instance_actions (instance_id, request_id, action, project_id, user_id) {rows}"
    " ON CONFLICT (instance_id, request_id) DO UPDATE SET updated_at = now()"
)
"""``start_action`` as SQL with ``{rows}`` (``VALUES`` or a ``SELECT`` of instance id, request id, action,
project id, user id) to fill in (``instances.create`` embeds it to start the action in the statement that makes
the instance)."""


async def start_action(
    conn: asyncpg.Connection,
    *,
    instance_id: str,
    request_id: str,
    action: str,
    project_id: str,
    user_id: str,
) -> int:
    """Create (or find, on redelivery) the action for this request; returns its id."""
    return await conn.fetchval(
        START_ACTION.format(rows="VALUES ($1, $2, $3, $4, $5)") + " RETURNING id",
        instance_id, request_id, action, project_id, user_id,
    )  # fmt: skip


FINISH_ACTION = (
    "UPDATE instance_actions SET finish_time = now(), updated_at = now(), message = COALESCE({message}, message)"
    " WHERE instance_id = {instance} AND request_id = {request}"
)
"""``finish_action`` as SQL with ``{instance}``, ``{request}`` and ``{message}`` to fill in (``instances.update``
embeds it to end an action in the same statement as the state change)."""


async def finish_action(
    conn: asyncpg.Connection, instance_id: str, request_id: str, message: str | None = None
) -> None:
    await conn.execute(
        FINISH_ACTION.format(instance="$1", request="$2", message="$3"), instance_id, request_id, message
    )


async def add_event(
    conn: asyncpg.Connection,
    *,
    instance_id: str,
    request_id: str,
    event: str,
    result: str,
    host: str | None,
    details: str | None = None,
    at: datetime | None = None,
) -> None:
    """Record that ``event`` started (``result`` 'start') or finished ('Success'/'Error') on ``host`` at ``at``
    (``add_events`` with one event)."""
    await add_events(
        conn,
        instance_id,
        request_id,
        [{"event": event, "result": result, "host": host, "details": details, "at": at}],
    )


@dataclass
class _Merged:
    """What a batch says about one (event, host): when it started and how it finished, if it did."""

    start: datetime | None = None
    finish: datetime | None = None
    result: str | None = None
    details: str | None = None


def _merge(events: list[dict[str, Any]]) -> dict[tuple[str, str | None], _Merged]:
    merged: dict[tuple[str, str | None], _Merged] = {}
    for e in events:
        at = e.get("at") or datetime.now(UTC)
        if isinstance(at, str):
            at = datetime.fromisoformat(at)
        m = merged.setdefault((e["event"], e.get("host")), _Merged())
        if e["result"] == "start":
            m.start = at if m.start is None else min(m.start, at)
            m.details = m.details if m.result is not None else e.get("details") or m.details
        elif m.finish is None or at >= m.finish:
            m.finish, m.result = at, e["result"]
            m.details = e.get("details") or m.details
    return merged


ACTION_OF = (
    "SELECT id FROM instance_actions WHERE instance_id = {instance}"
    " ORDER BY (request_id = {request}) DESC, id DESC LIMIT 1"
)
"""The id of the action of ``{request}`` on ``{instance}``, else of the instance's latest action (the one the
events of a request without an action of its own attach to). SQL to fill in, for every writer of events."""

UPSERT_EVENTS = """
INSERT INTO instance_action_events AS e (action_id, event, host, result, details, start_time, finish_time)
SELECT a.id, u.event, u.host, u.result, u.details, COALESCE(u.start, u.finish), u.finish
FROM ({action}) a, unnest({arrays}) AS u(event, host, result, details, start, finish, cond)
WHERE u.cond IS NULL OR u.cond = {applied}
ON CONFLICT (action_id, event, host) DO UPDATE SET
    start_time = LEAST(e.start_time, EXCLUDED.start_time),
    finish_time = COALESCE(EXCLUDED.finish_time, e.finish_time),
    result = CASE WHEN EXCLUDED.finish_time IS NULL THEN e.result ELSE EXCLUDED.result END,
    details = CASE WHEN EXCLUDED.finish_time IS NULL THEN e.details ELSE COALESCE(EXCLUDED.details, e.details) END
"""
"""Record steps (``event_arrays``) on the action ``{action}`` (``ACTION_OF``) selects, in one statement:
each step is the row of its (action, event, host) key, so a start and its finish may arrive in either order, and
concurrently (the key's unique index orders writers). A start only moves the start time earlier; a finish sets
the outcome and its details. ``{arrays}``: seven array parameters; ``{applied}``: an SQL boolean that rows whose
``cond`` is set must equal (``true`` when there are none)."""

ONE_SHOT_CONFLICT = (
    "ON CONFLICT (action_id, event, host) DO UPDATE SET result = EXCLUDED.result,"
    " finish_time = EXCLUDED.finish_time, details = concat_ws('; ', e.details, EXCLUDED.details)"
)
"""For an event written whole by its only writer (``INSERT INTO instance_action_events AS e ...``), e.g. a
scheduler's choice: written again for the same action (a reschedule), the row keeps both details, in order, and
the latest outcome."""

_ARRAY_TYPES = ("text", "text", "text", "text", "timestamptz", "timestamptz", "bool")


def upsert_events_sql(instance: str, request: str, first_arg: int, applied: str = "true") -> str:
    """``UPSERT_EVENTS`` with its arrays as parameters ``$first_arg`` .. ``$first_arg+6`` (``event_arrays``)."""
    arrays = ", ".join(f"${first_arg + i}::{t}[]" for i, t in enumerate(_ARRAY_TYPES))
    action = ACTION_OF.format(instance=instance, request=request)
    return UPSERT_EVENTS.format(action=action, arrays=arrays, applied=applied)


def event_arrays(events: Sequence[dict[str, Any]], if_applied: Sequence[dict[str, Any]] = ()) -> list[list[Any]]:
    """The seven arrays ``UPSERT_EVENTS`` takes: one row per (event, host) of ``events`` merged, plus the steps of
    ``if_applied`` that count only when the statement's change applied. A key those change gets two rows, the
    merge with them (``cond`` true) and without (``cond`` false); only one of them goes in."""
    base = _merge(events)
    rows: list[tuple[tuple[str, str | None], _Merged, bool | None]] = []
    if if_applied:
        full = _merge([*events, *if_applied])
        for key, m in full.items():
            if key not in base:
                rows.append((key, m, True))
            elif base[key] == m:
                rows.append((key, m, None))
            else:
                rows += [(key, m, True), (key, base[key], False)]
    else:
        rows = [(key, m, None) for key, m in base.items()]
    # In key order: two statements upserting overlapping keys then take their row locks in the same order, and
    # cannot deadlock (a timed flush of a build's steps and its final update may be applied at once).
    rows.sort(key=lambda r: (r[0][0], r[0][1] or ""))
    return [
        [k[0] for k, _, _ in rows], [k[1] for k, _, _ in rows], [m.result for _, m, _ in rows],
        [m.details for _, m, _ in rows], [m.start for _, m, _ in rows], [m.finish for _, m, _ in rows],
        [c for _, _, c in rows],
    ]  # fmt: skip


async def add_events(
    conn: asyncpg.Connection, instance_id: str, request_id: str, events: Sequence[dict[str, Any]]
) -> None:
    """Record steps of the action of ``request_id`` on ``instance_id`` (``UPSERT_EVENTS``, one statement): each
    event a dict with ``event``, ``result`` ('start', 'Success' or 'Error'), ``host``, and optional ``details``
    and ``at`` (datetime or ISO string; default now). Events for a request without an action attach to the latest
    action."""
    if events:
        await conn.execute(upsert_events_sql("$1", "$2", 3), instance_id, request_id, *event_arrays(events))


async def list_actions(conn: asyncpg.Connection, instance_id: str) -> list[asyncpg.Record]:
    return await conn.fetch("SELECT * FROM instance_actions WHERE instance_id = $1 ORDER BY id DESC", instance_id)


async def get_action(conn: asyncpg.Connection, instance_id: str, request_id: str) -> asyncpg.Record | None:
    return await conn.fetchrow(
        "SELECT * FROM instance_actions WHERE instance_id = $1 AND request_id = $2", instance_id, request_id
    )


async def list_events(conn: asyncpg.Connection, action_id: int) -> list[asyncpg.Record]:
    return await conn.fetch("SELECT * FROM instance_action_events WHERE action_id = $1 ORDER BY id", action_id)
