"""Instance actions and their events: the per-request, per-step record users read to diagnose."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import asyncpg

__all__ = [
    "FINISH_ACTION",
    "add_event",
    "add_events",
    "finish_action",
    "get_action",
    "list_actions",
    "list_events",
    "start_action",
]


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
        "INSERT INTO instance_actions (instance_id, request_id, action, project_id, user_id)"
        " VALUES ($1, $2, $3, $4, $5)"
        " ON CONFLICT (instance_id, request_id) DO UPDATE SET updated_at = now() RETURNING id",
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


async def add_events(conn: asyncpg.Connection, instance_id: str, request_id: str, events: list[dict[str, Any]]) -> None:
    """Record steps of the action of ``request_id`` on ``instance_id``: each event a dict with ``event``,
    ``result`` ('start', 'Success' or 'Error'), ``host``, and optional ``details`` and ``at`` (datetime or ISO
    string; default now). A batch costs at most three statements whatever its size (two when its events are new).

    Order-independent, because casts from one sender may be applied concurrently: an event is keyed by
    (action, event, host); a 'start' arriving after its finish only fills in the start time, a finish
    arriving first creates the row. Events for a request without an action attach to the latest action.
    """
    if not events:
        return
    # The action locked, with the events it has, in one round trip: serialises writers of its events (two conductors
    # may apply a start and its finish at once). NO KEY UPDATE, so inserting events (a key-share check) never waits.
    rows = await conn.fetch(
        "SELECT a.id AS action_id, e.id, e.event, e.host FROM (SELECT id FROM instance_actions WHERE instance_id = $1"
        " ORDER BY (request_id = $2) DESC, id DESC LIMIT 1 FOR NO KEY UPDATE) a"
        " LEFT JOIN instance_action_events e ON e.action_id = a.id ORDER BY e.id",
        instance_id, request_id,
    )  # fmt: skip
    if not rows:
        return
    action_id = rows[0]["action_id"]
    merged = _merge(events)
    existing = {(r["event"], r["host"]): r["id"] for r in rows if r["id"] is not None}
    fresh = [(key, m) for key, m in merged.items() if key not in existing]
    if fresh:
        await conn.execute(
            "INSERT INTO instance_action_events (action_id, event, host, result, details, start_time, finish_time)"
            " SELECT $1, * FROM unnest($2::text[], $3::text[], $4::text[], $5::text[], $6::timestamptz[],"
            " $7::timestamptz[])",
            action_id,
            [k[0] for k, _ in fresh], [k[1] for k, _ in fresh], [m.result for _, m in fresh],
            [m.details for _, m in fresh], [m.start or m.finish for _, m in fresh], [m.finish for _, m in fresh],
        )  # fmt: skip
    stale = [(existing[key], m) for key, m in merged.items() if key in existing]
    if stale:
        # A start only moves the start time earlier; a finish sets the outcome (and its details, if it has some).
        await conn.execute(
            "UPDATE instance_action_events e SET start_time = LEAST(e.start_time, u.start),"
            " finish_time = COALESCE(u.finish, e.finish_time),"
            " result = CASE WHEN u.finish IS NULL THEN e.result ELSE u.result END,"
            " details = CASE WHEN u.finish IS NULL THEN e.details ELSE COALESCE(u.details, e.details) END"
            " FROM unnest($1::bigint[], $2::timestamptz[], $3::timestamptz[], $4::text[], $5::text[])"
            " AS u(id, start, finish, result, details) WHERE e.id = u.id",
            [i for i, _ in stale], [m.start for _, m in stale], [m.finish for _, m in stale],
            [m.result for _, m in stale], [m.details for _, m in stale],
        )  # fmt: skip


async def list_actions(conn: asyncpg.Connection, instance_id: str) -> list[asyncpg.Record]:
    return await conn.fetch("SELECT * FROM instance_actions WHERE instance_id = $1 ORDER BY id DESC", instance_id)


async def get_action(conn: asyncpg.Connection, instance_id: str, request_id: str) -> asyncpg.Record | None:
    return await conn.fetchrow(
        "SELECT * FROM instance_actions WHERE instance_id = $1 AND request_id = $2", instance_id, request_id
    )


async def list_events(conn: asyncpg.Connection, action_id: int) -> list[asyncpg.Record]:
    return await conn.fetch("SELECT * FROM instance_action_events WHERE action_id = $1 ORDER BY id", action_id)
