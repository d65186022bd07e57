"""Failure bookkeeping shared by the scheduler and the conductor: ERROR with a readable fault, reschedules."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

import asyncpg
from oslo_config import cfg

from common import objects
from common.context import RequestContext
from common.db import actions, compute_nodes, instances
from common.db import networks as networks_db
from common.db.instances import TaskState, VmState
from common.db.pool import Database
from services.scheduler.rpcapi import SchedulerAPI

__all__ = ["error_in", "record_build_failure", "set_error"]

LOG = logging.getLogger(__name__)


async def set_error(
    db: Database, ctx: RequestContext, instance_id: str, message: str, *, code: int, host: str | None
) -> None:
    """Put a build in ERROR with a fault its owner can read, release its ports, and close its action."""
    await db.run(lambda conn: error_in(conn, ctx, instance_id, message, code=code, host=host))


async def error_in(
    conn: asyncpg.Connection,
    ctx: RequestContext,
    instance_id: str,
    message: str,
    *,
    code: int,
    host: str | None,
    values: dict | None = None,
    expected_vm_state: list[str] | None = None,
    expected_task_state: list[str | None] | None = None,
    details: str = "",
) -> bool:
    """``set_error`` inside the caller's transaction, with more ``values`` to set, guards on the current state
    and the fault's ``details``; False (and nothing written) when the instance is gone or the guards refuse.

    For a build that ended here: its ports (made with the instance) are released, as no guest will use them.
    """
    updated = await instances.update(
        conn, instance_id, {"vm_state": VmState.ERROR, "task_state": None, "power_state": 0, **(values or {})},
        expected_vm_state=expected_vm_state, expected_task_state=expected_task_state,
    )  # fmt: skip
    if updated is None:
        return False
    await networks_db.release_instance_ports(conn, instance_id)
    await instances.add_fault(
        conn, instance_id, message, code=code, host=host, details=details, request_id=ctx.request_id
    )
    await actions.finish_action(conn, instance_id, ctx.request_id, "Error")
    return True


def describe_chain(failures: list[dict]) -> str:
    return "; ".join(f"attempt {f['attempt']} on {f['host']} failed at {f['step']}: {f['reason']}" for f in failures)


async def record_build_failure(
    conf: cfg.ConfigOpts,
    db: Database,
    scheduler: SchedulerAPI,
    ctx: RequestContext,
    *,
    instance_id: str,
    host: str,
    attempt: int,
    reason: str,
    step: str,
) -> None:
    """Release the claim, append to the cause chain, then reschedule (excluding failed hosts) or go to ERROR.

    Idempotent: a duplicate report of the same failed attempt finds the instance moved on and does nothing
    but make sure the claim is released.
    """
    failure = {"host": host, "step": step, "reason": reason, "attempt": attempt, "at": datetime.now(UTC).isoformat()}

    async def tx(conn: asyncpg.Connection) -> dict[str, Any] | list[dict] | None:
        """The spec to reschedule with, the cause chain of a build that ended in ERROR, or None (moved on)."""
        row = await instances.get(conn, instance_id)
        if row is None:
            await compute_nodes.release(conn, instance_id)
            return None
        if row["vm_state"] != VmState.BUILDING or row["host"] != host or row["attempt"] != attempt:
            return None
        await compute_nodes.release(conn, instance_id)
        chain = [*row["build_failures"], failure]
        if attempt < conf.scheduler.max_attempts:
            updated = await instances.update(
                conn,
                instance_id,
                {"host": None, "node": None, "task_state": TaskState.SCHEDULING, "build_failures": chain},
            )
            if updated is None:  # deleted meanwhile
                return None
            ports = await networks_db.instance_ports(conn, instance_id, updated["requested_networks"])
            return objects.request_spec_from_instance(updated, ports)
        message = f"Build failed after {attempt} attempt(s): {describe_chain(chain)}"
        await error_in(conn, ctx, instance_id, message, code=500, host=host, values={"build_failures": chain})
        return chain

    outcome = await db.run(tx)
    if outcome is None:
        return
    if isinstance(outcome, dict):
        LOG.info("instance %s: attempt %d on %s failed at %s; rescheduling", instance_id, attempt, host, step)
        try:
            await scheduler.build_instances(ctx, outcome)
        except Exception as e:  # the broker is gone too: say so on the instance rather than leave it in BUILD
            await set_error(db, ctx, instance_id, f"Could not reschedule after {reason}: {e}", code=500, host=host)
    else:
        LOG.warning("instance %s: build failed for good: %s", instance_id, describe_chain(outcome))
