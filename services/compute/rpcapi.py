"""Client stub for the compute service: the one place that knows the ``compute.<host>`` topic and its methods.

Callers (the scheduler for builds, the API for everything else) name the host; the stub picks the topic.
"""

from __future__ import annotations

from typing import Any

from common.context import RequestContext
from common.rpc import RpcClient

__all__ = ["ComputeAPI", "topic_for"]


def topic_for(host: str) -> str:
    return f"compute.{host}"


class ComputeAPI:
    def __init__(self, client: RpcClient) -> None:
        self.client = client

    async def build_and_run_instance(
        self, ctx: RequestContext, host: str, instance: dict[str, Any], request_spec: dict[str, Any], attempt: int
    ) -> None:
        await self.client.cast(
            topic_for(host),
            "build_and_run_instance",
            ctx,
            instance=instance,
            request_spec=request_spec,
            attempt=attempt,
        )

    async def terminate_instance(self, ctx: RequestContext, host: str, instance: dict[str, Any]) -> None:
        await self.client.cast(topic_for(host), "terminate_instance", ctx, instance=instance)

    async def stop_instance(self, ctx: RequestContext, host: str, instance: dict[str, Any]) -> None:
        await self.client.cast(topic_for(host), "stop_instance", ctx, instance=instance)

    async def start_instance(self, ctx: RequestContext, host: str, instance: dict[str, Any]) -> None:
        await self.client.cast(topic_for(host), "start_instance", ctx, instance=instance)

    async def reboot_instance(
        self, ctx: RequestContext, host: str, instance: dict[str, Any], reboot_type: str = "SOFT"
    ) -> None:
        await self.client.cast(topic_for(host), "reboot_instance", ctx, instance=instance, reboot_type=reboot_type)

    async def get_console_output(
        self, ctx: RequestContext, host: str, instance: dict[str, Any], length: int | None = None
    ) -> str:
        """Raises ``NotFound`` when the host has no such guest, ``RpcTimeout`` when the host does not answer."""
        return await self.client.call(topic_for(host), "get_console_output", ctx, instance=instance, length=length)
