"""Client stub for the network service (topic ``network``).

The one place that knows this topic's name, its method names and their arguments; callers (computes) never
build messages by hand. Both methods are calls: the caller needs the ports (or the certainty they are gone).
An instance's ports are made by the API and bound by the scheduler's claim, not asked for here.
"""

from __future__ import annotations

from typing import Any

from common.context import RequestContext
from common.rpc import RpcClient

__all__ = ["NetworkAPI"]


class NetworkAPI:
    TOPIC = "network"
    # Bump the minor version for a compatible addition (a new optional argument), the major one otherwise; the
    # envelope carries the wire version.
    VERSION = "2.0"  # 1.1: get_host_ports; 2.0: allocate_for_instance gone (the API makes the ports)

    def __init__(self, client: RpcClient, timeout: float | None = None) -> None:
        """``timeout``: seconds each call waits for its reply (default ``[messaging] rpc_timeout``)."""
        self.client = client
        self.timeout = timeout

    async def get_host_ports(self, ctx: RequestContext, host: str) -> list[dict[str, Any]]:
        """The firewall view of every guest port bound to ``host``: ``[{"id", "network_id", "mac_address", "tap",
        "bridge", "ips", "dhcp_ips", "security_groups": [{"id", "rules"}], "remote_group_ips": {group_id: [ips]}}]``.
        A compute calls it to (re)build its per-port nftables rules. Read-only."""
        return await self.client.call(self.TOPIC, "get_host_ports", ctx, timeout=self.timeout, host=host)

    async def deallocate_for_instance(self, ctx: RequestContext, instance_id: str) -> dict[str, list[str]]:
        """Delete the ports made for ``instance_id``, unbind the user's own ports. Idempotent.

        Returns ``{"deleted": [port ids], "unbound": [port ids]}``.
        """
        return await self.client.call(
            self.TOPIC, "deallocate_for_instance", ctx, timeout=self.timeout, instance_id=instance_id
        )
