"""The conductor: the database writes computes ask for over RPC (they hold no database credentials)."""

from __future__ import annotations

import logging
from typing import Any

import asyncpg
from oslo_config import cfg

from common.context import RequestContext
from common.db import actions, compute_nodes, instances
from common.db.pool import Database
from services.scheduler.faults import record_build_failure
from services.scheduler.host_state import HostView
from services.scheduler.rpcapi import SchedulerAPI

__all__ = ["ConductorManager"]

LOG = logging.getLogger(__name__)


class ConductorManager:
    """Endpoint of the ``conductor`` topic. Every method is idempotent (guards on state)."""

    def __init__(
        self, conf: cfg.ConfigOpts, db: Database, scheduler: SchedulerAPI, view: HostView | None = None
    ) -> None:
        """``view``: the host view of the scheduler in this process, which learns the room a release gives back
        at once (other schedulers learn it from their periodic usage reload)."""
        self.conf = conf
        self.db = db
        self.scheduler = scheduler
        self.view = view

    async def instance_update(
        self,
        ctx: RequestContext,
        instance_id: str,
        values: dict[str, Any],
        expected_task_state: list[str | None] | None = None,
        event: dict[str, Any] | None = None,
        events: list[dict[str, Any]] | None = None,
    ) -> None:
        """Apply a compute's state change and, atomically, the steps that led to it (``events``, recorded
        whether or not the guarded update applies) and the event explaining it (``event``, only with the
        update). When the task ends (task_state None) the request's action ends too. One statement."""
        row = await self.db.run(
            lambda conn: instances.update(
                conn, instance_id, values, expected_task_state=expected_task_state, request_id=ctx.request_id,
                finish_action="task_state" in values and values["task_state"] is None,
                events=events or (), events_if_applied=[event] if event is not None else (),
            ),
            transaction=False,
        )  # fmt: skip
        if row is None:
            LOG.info("instance %s: update %s skipped (state moved on or deleted)", instance_id, sorted(values))

    async def action_events(self, ctx: RequestContext, instance_id: str, events: list[dict[str, Any]]) -> None:
        """Record steps (``actions.add_events``: each with event, result, host, details, at); one statement."""
        await self.db.run(lambda c: actions.add_events(c, instance_id, ctx.request_id, events), transaction=False)

    async def build_failed(
        self,
        ctx: RequestContext,
        instance_id: str,
        host: str,
        attempt: int,
        reason: str,
        step: str,
        events: list[dict[str, Any]] | None = None,
    ) -> None:
        """The build failed on ``host``: record its steps (``events``), then reschedule or go to ERROR."""
        if events:
            await self.action_events(ctx, instance_id, events)
        await record_build_failure(
            self.conf,
            self.db,
            self.scheduler,
            ctx,
            instance_id=instance_id,
            host=host,
            attempt=attempt,
            reason=reason,
            step=step,
        )

    async def instance_deleted(self, ctx: RequestContext, instance_id: str, host: str) -> None:
        """The compute destroyed the guest: give back the claim, mark the row deleted."""

        async def tx(conn: asyncpg.Connection) -> asyncpg.Record | None:
            released = await compute_nodes.release(conn, instance_id)
            if await instances.mark_deleted(conn, instance_id) is not None:
                await actions.finish_action(conn, instance_id, ctx.request_id)
            return released

        released = await self.db.run(tx)
        if released is not None and self.view is not None:
            self.view.claimed(released)
