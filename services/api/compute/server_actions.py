"""``POST /servers/{id}/action`` (stop, start, reboot, console output) and ``/os-instance-actions``.

Each power action: guard on (vm_state, task_state) with one conditional UPDATE, record the action, cast to the
server's compute. A guard that fails is a 409 naming the state; a cast the broker refuses undoes the task state.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg
from aiohttp import web

from common import exceptions
from common.context import RequestContext
from common.db import actions, instances
from common.db.instances import TaskState, VmState
from services.api.app import DB, RPC, ctx
from services.api.compute.servers import get_visible
from services.api.compute.views import action_view, event_view
from services.api.compute.wire import instance_to_wire
from services.api.validation import json_body
from services.compute.rpcapi import ComputeAPI

__all__ = [
    "POWER_ACTIONS",
    "PowerAction",
    "check_state",
    "get_instance_action",
    "list_instance_actions",
    "server_action",
]

LOG = logging.getLogger(__name__)


@dataclass(frozen=True)
class PowerAction:
    """A state change a compute carries out: allowed from these states, marked by ``task_state`` meanwhile."""

    name: str  # the action's name in messages and in os-instance-actions
    vm_states: tuple[str, ...]
    task_states: tuple[str | None, ...]
    task_state: str


POWER_ACTIONS = {
    "os-stop": PowerAction("stop", (VmState.ACTIVE, VmState.ERROR), (None,), TaskState.POWERING_OFF),
    "os-start": PowerAction("start", (VmState.STOPPED,), (None,), TaskState.POWERING_ON),
    "reboot-SOFT": PowerAction("reboot", (VmState.ACTIVE,), (None,), TaskState.REBOOTING),
    "reboot-HARD": PowerAction(
        "reboot",
        (VmState.ACTIVE, VmState.STOPPED, VmState.ERROR),
        (None, TaskState.REBOOTING, TaskState.REBOOTING_HARD),
        TaskState.REBOOTING_HARD,
    ),
}


def check_state(row: Any, action: str, vm_states: Sequence[str], task_states: Sequence[str | None]) -> None:
    """Nova's state guard and its message. Raises ``Conflict``."""
    if row["vm_state"] not in vm_states:
        raise exceptions.Conflict(f"Cannot '{action}' instance {row['id']} while it is in vm_state {row['vm_state']}")
    if row["task_state"] not in task_states:
        raise exceptions.Conflict(
            f"Cannot '{action}' instance {row['id']} while it is in task_state {row['task_state']}"
        )
    if not row["host"]:
        raise exceptions.Conflict(f"Cannot '{action}' instance {row['id']}: it has not been placed on a host")


async def _power(request: web.Request, c: RequestContext, sid: str, op: PowerAction, reboot_type: str | None) -> None:
    async def work(conn: asyncpg.Connection) -> asyncpg.Record:
        row = await get_visible(conn, c, sid)
        check_state(row, op.name, op.vm_states, op.task_states)
        updated = await instances.update(
            conn,
            sid,
            {"task_state": op.task_state},
            expected_vm_state=op.vm_states,
            expected_task_state=op.task_states,
        )
        if updated is None:  # changed between the read and the update
            fresh = await get_visible(conn, c, sid)
            check_state(fresh, op.name, op.vm_states, op.task_states)
            raise exceptions.Conflict(f"Cannot '{op.name}' instance {sid}: its state changed; retry.")
        await actions.start_action(
            conn,
            instance_id=sid,
            request_id=c.request_id,
            action=op.name,
            project_id=row["project_id"],
            user_id=c.user_id,
        )
        return updated

    row = await request.app[DB].run(work)
    compute = ComputeAPI(request.app[RPC])
    wire = instance_to_wire(row)
    try:
        if op.name == "stop":
            await compute.stop_instance(c, row["host"], wire)
        elif op.name == "start":
            await compute.start_instance(c, row["host"], wire)
        else:
            await compute.reboot_instance(c, row["host"], wire, reboot_type=reboot_type or "SOFT")
    except exceptions.StratusError as e:
        reason = (
            f"no compute service consumes compute.{row['host']}" if isinstance(e, exceptions.NotFound) else e.message
        )

        async def undo(conn: asyncpg.Connection) -> None:
            await instances.update(conn, sid, {"task_state": None}, expected_task_state=[op.task_state])
            await actions.finish_action(conn, sid, c.request_id, message=f"Error: {reason}")

        await request.app[DB].run(undo)
        raise exceptions.Conflict(
            f"Cannot '{op.name}' instance {sid}: its compute host {row['host']} is unreachable ({reason})"
        ) from e


async def _console_output(request: web.Request, c: RequestContext, sid: str, length: Any) -> web.Response:
    row = await request.app[DB].run(lambda conn: get_visible(conn, c, sid))
    if not row["host"]:
        raise exceptions.Conflict(
            f"Cannot 'get console output' of instance {sid}: it has not been placed on a host yet "
            f"(vm_state {row['vm_state']})"
        )
    if row["vm_state"] not in (VmState.ACTIVE, VmState.STOPPED, VmState.ERROR) or row["task_state"] in (
        TaskState.SCHEDULING,
        TaskState.NETWORKING,
        TaskState.DELETING,
    ):
        raise exceptions.Conflict(
            f"Cannot 'get console output' of instance {sid} while it is in vm_state {row['vm_state']}"
            f" / task_state {row['task_state']}"
        )
    lines = None if length is None or int(length) < 0 else int(length)
    try:
        output = await ComputeAPI(request.app[RPC]).get_console_output(c, row["host"], instance_to_wire(row), lines)
    except exceptions.NotFound as e:
        raise exceptions.Conflict(f"No console output for instance {sid} on host {row['host']}: {e.message}") from e
    return web.json_response({"output": output})


async def server_action(request: web.Request) -> web.Response:
    """POST /servers/{id}/action: a body with exactly one action key."""
    c = ctx(request)
    sid = request.match_info["server_id"]
    body = await json_body(request)  # one key, an action of schemas.ACTION, checked by the route (ACTION_BODY)
    name, arg = next(iter(body.items()))
    if name == "os-getConsoleOutput":
        return await _console_output(request, c, sid, (arg or {}).get("length"))
    reboot_type = None
    key = name
    if name == "reboot":
        reboot_type = arg["type"].upper()
        key = f"reboot-{reboot_type}"
    await _power(request, c, sid, POWER_ACTIONS[key], reboot_type)
    return web.Response(status=202)


async def list_instance_actions(request: web.Request) -> web.Response:
    """GET /servers/{id}/os-instance-actions, newest first (also for deleted servers: that is when it matters)."""
    c = ctx(request)
    sid = request.match_info["server_id"]

    async def work(conn: asyncpg.Connection) -> list:
        await get_visible(conn, c, sid, with_deleted=True)
        return await actions.list_actions(conn, sid)

    rows = await request.app[DB].run(work)
    return web.json_response({"instanceActions": [action_view(r) for r in rows]})


async def get_instance_action(request: web.Request) -> web.Response:
    c = ctx(request)
    sid = request.match_info["server_id"]
    rid = request.match_info["request_id"]

    async def work(conn: asyncpg.Connection) -> tuple:
        await get_visible(conn, c, sid, with_deleted=True)
        action = await actions.get_action(conn, sid, rid)
        if action is None:
            raise exceptions.NotFound(f"Action {rid} on instance {sid} could not be found.")
        return action, await actions.list_events(conn, action["id"])

    action, events = await request.app[DB].run(work)
    view: dict[str, Any] = action_view(action)
    view["events"] = [event_view(e, is_admin=c.is_admin) for e in events]
    return web.json_response({"instanceAction": view})
