"""Instance actions and their events: the per-request, per-step record users read to diagnose."""

from __future__ import annotations

from datetime import UTC, datetime

import asyncpg

__all__ = ["add_event", "finish_action", "get_action", "list_actions", "list_events", "start_action"]


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


async def finish_action(
    conn: asyncpg.Connection, instance_id: str, request_id: str, message: str | None = None
) -> None:
    await conn.execute(
        "UPDATE instance_actions SET finish_time = now(), updated_at = now(), message = COALESCE($3, message)"
        " WHERE instance_id = $1 AND request_id = $2",
        instance_id, request_id, message,
    )  # fmt: skip


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
    """Record that ``event`` started (``result`` 'start') or finished ('Success'/'Error') on ``host`` at ``at``.

    Order-independent, because casts from one sender may be applied concurrently: an event is keyed by
    (action, event, host); a 'start' arriving after its finish only fills in the start time, a finish
    arriving first creates the row. Events for a request without an action attach to the latest action.
    """
    at = at or datetime.now(UTC)
    action_id = await conn.fetchval(
        "SELECT id FROM instance_actions WHERE instance_id = $1 AND request_id = $2", instance_id, request_id
    )
    if action_id is None:
        action_id = await conn.fetchval(
            "SELECT id FROM instance_actions WHERE instance_id = $1 ORDER BY id DESC LIMIT 1", instance_id
        )
    if action_id is None:
        return
    # Serialise writers of this action's events (two conductors may apply its start and finish at once).
    await conn.execute("SELECT 1 FROM instance_actions WHERE id = $1 FOR UPDATE", action_id)
    row = await conn.fetchrow(
        "SELECT id FROM instance_action_events WHERE action_id = $1 AND event = $2 AND host IS NOT DISTINCT FROM $3"
        " ORDER BY id DESC LIMIT 1",
        action_id, event, host,
    )  # fmt: skip
    if result == "start":
        if row is None:
            await conn.execute(
                "INSERT INTO instance_action_events (action_id, event, host, details, start_time)"
                " VALUES ($1, $2, $3, $4, $5)",
                action_id, event, host, details, at,
            )  # fmt: skip
        else:
            await conn.execute(
                "UPDATE instance_action_events SET start_time = LEAST(start_time, $2) WHERE id = $1", row["id"], at
            )
        return
    if row is None:
        await conn.execute(
            "INSERT INTO instance_action_events (action_id, event, host, result, details, start_time, finish_time)"
            " VALUES ($1, $2, $3, $4, $5, $6, $6)",
            action_id, event, host, result, details, at,
        )  # fmt: skip
    else:
        await conn.execute(
            "UPDATE instance_action_events SET finish_time = $2, result = $3, details = COALESCE($4, details)"
            " WHERE id = $1",
            row["id"], at, result, details,
        )  # fmt: skip


async def list_actions(conn: asyncpg.Connection, instance_id: str) -> list[asyncpg.Record]:
    return await conn.fetch("SELECT * FROM instance_actions WHERE instance_id = $1 ORDER BY id DESC", instance_id)


async def get_action(conn: asyncpg.Connection, instance_id: str, request_id: str) -> asyncpg.Record | None:
    return await conn.fetchrow(
        "SELECT * FROM instance_actions WHERE instance_id = $1 AND request_id = $2", instance_id, request_id
    )


async def list_events(conn: asyncpg.Connection, action_id: int) -> list[asyncpg.Record]:
    return await conn.fetch("SELECT * FROM instance_action_events WHERE action_id = $1 ORDER BY id", action_id)
