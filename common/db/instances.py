"""Instances, their faults, and the state transitions services make on them."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from enum import Enum, IntEnum, StrEnum
from typing import Any

import asyncpg

from common.db import actions

__all__ = [
    "PowerState",
    "TaskState",
    "VmState",
    "add_fault",
    "create",
    "get",
    "latest_faults",
    "list_",
    "mark_deleted",
    "update",
]


class VmState(StrEnum):
    BUILDING = "building"
    ACTIVE = "active"
    STOPPED = "stopped"
    ERROR = "error"
    DELETED = "deleted"


class TaskState(StrEnum):
    SCHEDULING = "scheduling"
    NETWORKING = "networking"
    SPAWNING = "spawning"
    POWERING_OFF = "powering-off"
    POWERING_ON = "powering-on"
    REBOOTING = "rebooting"
    REBOOTING_HARD = "rebooting_hard"
    DELETING = "deleting"


class PowerState(IntEnum):
    NOSTATE = 0
    RUNNING = 1
    PAUSED = 3
    SHUTDOWN = 4
    CRASHED = 6
    SUSPENDED = 7


_COLUMNS = {
    "name", "hostname", "vm_state", "task_state", "power_state", "host", "node", "availability_zone",
    "launched_at", "terminated_at", "attempt", "metadata", "access_ip_v4", "deleted_at", "build_failures",
    "config_drive",
}  # fmt: skip


def _value(v: Any) -> Any:
    if isinstance(v, Enum):
        return v.value
    if isinstance(v, str) and v.endswith("+00:00") and "T" in v:
        return datetime.fromisoformat(v)
    return v


async def create(conn: asyncpg.Connection, values: dict[str, Any], *, request_id: str, action: str) -> asyncpg.Record:
    """Insert the instance and, in the same statement, the action of the request that makes it
    (``actions.start_action``'s row)."""
    cols = list(values)
    args = [_value(values[c]) for c in cols] + [request_id, action]
    placeholders = ", ".join(f"${i}" for i in range(1, len(cols) + 1))
    action_row = f"SELECT id, ${len(args) - 1}, ${len(args)}, project_id, user_id FROM i"
    return await conn.fetchrow(
        f"WITH i AS (INSERT INTO instances ({', '.join(cols)}) VALUES ({placeholders}) RETURNING *),"
        f" a AS ({actions.START_ACTION.format(rows=action_row)})"
        " SELECT * FROM i",
        *args,
    )


async def get(conn: asyncpg.Connection, instance_id: str, *, with_deleted: bool = False) -> asyncpg.Record | None:
    q = "SELECT * FROM instances WHERE id = $1"
    if not with_deleted:
        q += " AND deleted_at IS NULL"
    return await conn.fetchrow(q, instance_id)


async def list_(
    conn: asyncpg.Connection,
    *,
    project_id: str | None = None,
    host: str | None = None,
    name: str | None = None,
    limit: int | None = None,
    marker: str | None = None,
    states: Sequence[tuple[str, str | None, Sequence[str]]] | None = None,
) -> list[asyncpg.Record]:
    """Live instances, newest first. ``states``: (vm_state, task_state, excluded task states) alternatives, a
    task_state of None meaning any but the excluded ones (``views.status_states`` makes them from statuses)."""
    where, args = ["deleted_at IS NULL"], []
    for col, val in (("project_id", project_id), ("host", host)):
        if val is not None:
            args.append(val)
            where.append(f"{col} = ${len(args)}")
    if name is not None:
        args.append(name)
        where.append(f"name ~ ${len(args)}")
    if states is not None:
        alternatives = []
        for vm_state, task_state, excluded in states:
            args += [vm_state, task_state] if task_state is not None else [vm_state, list(excluded)]
            vm, task = f"${len(args) - 1}", f"${len(args)}"
            alternatives.append(
                f"(vm_state = {vm} AND task_state = {task})" if task_state is not None
                else f"(vm_state = {vm} AND (task_state IS NULL OR task_state <> ALL({task}::text[])))"
            )  # fmt: skip
        where.append(f"({' OR '.join(alternatives) or 'false'})")
    if marker is not None:
        args.append(marker)
        where.append(f"(created_at, id) < (SELECT created_at, id FROM instances WHERE id = ${len(args)})")
    q = f"SELECT * FROM instances WHERE {' AND '.join(where)} ORDER BY created_at DESC, id DESC"
    if limit is not None:
        args.append(limit)
        q += f" LIMIT ${len(args)}"
    return await conn.fetch(q, *args)


async def update(
    conn: asyncpg.Connection,
    instance_id: str,
    values: dict[str, Any],
    *,
    expected_task_state: Sequence[str | None] | None = None,
    expected_vm_state: Sequence[str] | None = None,
    request_id: str | None = None,
    finish_action: bool = False,
    events: Sequence[dict[str, Any]] = (),
    events_if_applied: Sequence[dict[str, Any]] = (),
) -> asyncpg.Record | None:
    """Guarded update: returns the new row, or None when the guard (or the row) did not match.

    The guards make handlers idempotent: a redelivered message finds the state already moved on.
    With ``request_id``, in the same statement (one round trip, atomic without a transaction): the action of
    that request ends when the update applies (``finish_action``), and its steps are recorded
    (``actions.add_events``): ``events`` whether or not the update applies, ``events_if_applied`` only if it does.
    """
    unknown = set(values) - _COLUMNS
    if unknown:
        raise ValueError(f"not updatable: {sorted(unknown)}")
    sets, args = [], [instance_id]
    for col, val in values.items():
        args.append(_value(val))
        sets.append(f"{col} = ${len(args)}")
    where = ["id = $1", "deleted_at IS NULL"]
    if expected_task_state is not None:
        states = [_value(s) for s in expected_task_state]
        cond = []
        if None in states:
            cond.append("task_state IS NULL")
        real = [s for s in states if s is not None]
        if real:
            args.append(real)
            cond.append(f"task_state = ANY(${len(args)})")
        where.append("(" + " OR ".join(cond or ["false"]) + ")")
    if expected_vm_state is not None:
        args.append([_value(s) for s in expected_vm_state])
        where.append(f"vm_state = ANY(${len(args)})")
    sql = f"UPDATE instances SET {', '.join(sets)}, updated_at = now() WHERE {' AND '.join(where)} RETURNING *"
    if request_id is None or not (finish_action or events or events_if_applied):
        return await conn.fetchrow(sql, *args)
    args.append(request_id)
    request, ctes = f"${len(args)}", [f"i AS ({sql})"]
    if finish_action:
        finish = actions.FINISH_ACTION.format(instance="$1", request=request, message="NULL")
        ctes.append(f"f AS ({finish} AND EXISTS (SELECT 1 FROM i))")
    if events or events_if_applied:
        upsert = actions.upsert_events_sql("$1", request, len(args) + 1, applied="EXISTS (SELECT 1 FROM i)")
        args += actions.event_arrays(events, events_if_applied)
        ctes.append(f"ev AS ({upsert})")
    return await conn.fetchrow(f"WITH {', '.join(ctes)} SELECT * FROM i", *args)


async def mark_deleted(conn: asyncpg.Connection, instance_id: str) -> asyncpg.Record | None:
    return await conn.fetchrow(
        "UPDATE instances SET vm_state = 'deleted', task_state = NULL, power_state = 0,"
        " deleted_at = now(), terminated_at = now(), updated_at = now()"
        " WHERE id = $1 AND deleted_at IS NULL RETURNING *",
        instance_id,
    )


async def add_fault(
    conn: asyncpg.Connection,
    instance_id: str,
    message: str,
    *,
    code: int = 500,
    details: str | list | dict = "",
    host: str | None = None,
    request_id: str | None = None,
) -> None:
    if not isinstance(details, str):
        details = json.dumps(details, indent=1)
    await conn.execute(
        "INSERT INTO instance_faults (instance_id, code, message, details, host, request_id)"
        " VALUES ($1, $2, $3, $4, $5, $6)",
        instance_id, code, message, details, host, request_id,
    )  # fmt: skip


async def latest_faults(conn: asyncpg.Connection, instance_ids: Sequence[str]) -> dict[str, asyncpg.Record]:
    rows = await conn.fetch(
        "SELECT DISTINCT ON (instance_id) * FROM instance_faults WHERE instance_id = ANY($1)"
        " ORDER BY instance_id, id DESC",
        list(instance_ids),
    )
    return {r["instance_id"]: r for r in rows}


def now() -> datetime:
    return datetime.now(UTC)
