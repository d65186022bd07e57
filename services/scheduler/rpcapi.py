"""Client stubs for the scheduler service's two topics: ``scheduler`` and ``conductor``.

The one place that knows these topic and method names; callers never build messages by hand.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from common.context import RequestContext
from common.rpc import RpcClient

__all__ = ["CAPACITY_EXCHANGE", "ConductorAPI", "SchedulerAPI"]

CAPACITY_EXCHANGE = "capacity"


def _now() -> str:
    return datetime.now(UTC).isoformat()


class SchedulerAPI:
    TOPIC = "scheduler"

    def __init__(self, client: RpcClient) -> None:
        self.client = client

    async def build_instances(self, ctx: RequestContext, request_spec: dict[str, Any]) -> None:
        await self.client.cast(self.TOPIC, "build_instances", ctx, request_spec=request_spec)

    async def build_instances_batch(self, ctx: RequestContext, request_specs: list[dict[str, Any]]) -> None:
        """A multi-create batch, placed by one scheduler in order (each placement sees the ones before)."""
        await self.client.cast(self.TOPIC, "build_instances", ctx, request_specs=request_specs)

    async def refresh_aggregates(self, ctx: RequestContext) -> None:
        """Tell every scheduler (on the capacity fanout) to reload host aggregates now."""
        await self.client.fanout(CAPACITY_EXCHANGE, "refresh_aggregates", ctx)


class ConductorAPI:
    """What computes may change in the database, over RPC (they hold no database credentials)."""

    TOPIC = "conductor"

    def __init__(self, client: RpcClient) -> None:
        self.client = client

    async def instance_update(
        self,
        ctx: RequestContext,
        instance_id: str,
        values: dict[str, Any],
        expected_task_state: list[str | None] | None = None,
        event: dict[str, Any] | None = None,
        events: list[dict[str, Any]] | None = None,
    ) -> None:
        """Guarded update; ``event`` (one of ``action_events``' events) is recorded in the same transaction when
        the update applies, so a reader who sees the new state also sees the event that explains it; ``events``
        (the steps that led here, see ``event()``) are recorded in that transaction in any case."""
        if event is not None:
            event = {**event, "at": event.get("at") or _now()}
        await self.client.cast(
            self.TOPIC,
            "instance_update",
            ctx,
            instance_id=instance_id,
            values=values,
            expected_task_state=expected_task_state,
            event=event,
            events=events,
        )

    @staticmethod
    def event(event: str, result: str, host: str, details: str | None = None) -> dict[str, Any]:
        """One step for ``action_events``/``events``: stamped here, at the sender, so the time is right whenever
        it is applied."""
        return {"event": event, "result": result, "host": host, "details": details, "at": _now()}

    async def action_events(self, ctx: RequestContext, instance_id: str, events: list[dict[str, Any]]) -> None:
        """Record steps (each from ``event()``) in one cast and one transaction."""
        await self.client.cast(self.TOPIC, "action_events", ctx, instance_id=instance_id, events=events)

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
        """The build failed at ``step`` on ``host``; ``events`` are its steps not yet sent."""
        await self.client.cast(
            self.TOPIC,
            "build_failed",
            ctx,
            instance_id=instance_id,
            host=host,
            attempt=attempt,
            reason=reason,
            step=step,
            events=events,
        )

    async def instance_deleted(self, ctx: RequestContext, instance_id: str, host: str) -> None:
        await self.client.cast(self.TOPIC, "instance_deleted", ctx, instance_id=instance_id, host=host)

    async def report_capacity(self, ctx: RequestContext, capacity: dict[str, Any]) -> None:
        """Publish a host's capacity to every scheduler (fanout); one of them persists it."""
        await self.client.fanout(CAPACITY_EXCHANGE, "update_capacity", ctx, capacity=capacity)
