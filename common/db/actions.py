"""Instance actions and their events: the per-request, per-step record users read to diagnose."""

from __future__ import annotations

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
) -> None:
    """``result`` 'start' opens an event; 'Success'/'Error' closes the newest open one of that name.

    Events for a request without an action (e.g. internal work) attach to the instance's latest action.
    """
    action_id = await conn.fetchval(
        "SELECT id FROM instance_actions WHERE instance_id = $1 AND request_id = $2", instance_id, request_id
    )
    if action_id is None:
        action_id = await conn.fetchval(
            "SELECT id FROM instance_actions WHERE instance_id = $1 ORDER BY id DESC LIMIT 1", instance_id
        )
    if action_id is None:
        return
    if result == "start":
        await conn.execute(
            "INSERT INTO instance_action_events (action_id, event, host, details) VALUES ($1, $2, $3, $4)",
            action_id, event, host, details,
        )  # fmt: skip
        return
    closed = await conn.fetchval(
        "UPDATE instance_action_events SET finish_time = now(), result = $3,"
        " details = COALESCE($4, details), host = COALESCE(host, $5)"
        " WHERE id = (SELECT id FROM instance_action_events WHERE action_id = $1 AND event = $2"
        "             AND finish_time IS NULL ORDER BY id DESC LIMIT 1) RETURNING id",
        action_id, event, result, details, host,
    )  # fmt: skip
    if closed is None:
        await conn.execute(
            "INSERT INTO instance_action_events (action_id, event, host, result, details, finish_time)"
            " VALUES ($1, $2, $3, $4, $5, now())",
            action_id, event, host, result, details,
        )  # fmt: skip


async def list_actions(conn: asyncpg.Connection, instance_id: str) -> list[asyncpg.Record]:
    return await conn.fetch("SELECT * FROM instance_actions WHERE instance_id = $1 ORDER BY id DESC", instance_id)


async def get_action(conn: asyncpg.Connection, instance_id: str, request_id: str) -> asyncpg.Record | None:
    return await conn.fetchrow(
        "SELECT * FROM instance_actions WHERE instance_id = $1 AND request_id = $2", instance_id, request_id
    )


async def list_events(conn: asyncpg.Connection, action_id: int) -> list[asyncpg.Record]:
    return await conn.fetch("SELECT * FROM instance_action_events WHERE action_id = $1 ORDER BY id", action_id)
