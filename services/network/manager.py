"""The network service's RPC endpoint (topic ``network``): what computes ask about their guests' ports.

A plain class with the database injected: ``common.rpc`` maps ``get_host_ports`` and
``deallocate_for_instance`` messages onto it, and tests call it directly. Both are idempotent, because a call
may be retried or redelivered after a broker failover.

An instance's ports are made by the API in the transaction that creates the instance and bound to a host by
the scheduler's claim (``common.db.networks.attach_instance_ports``/``bind_instance_ports``), so a boot costs
the network service nothing; docs/internals.md says why. DHCP, DNS and metadata (``services.network.dhcp``)
serve what those write.
"""

from __future__ import annotations

import logging
from typing import Any

import asyncpg
from oslo_config import cfg

from common.context import RequestContext
from common.db import networks as db_networks
from common.db import security_groups as db_sg
from common.db.pool import Database

__all__ = ["NetworkManager", "firewall_ports"]

LOG = logging.getLogger(__name__)


async def firewall_ports(conn: asyncpg.Connection, host: str) -> list[dict[str, Any]]:
    """What a compute host needs to filter its guests' ports: every compute port bound to ``host``.

    Each: ``{"id", "network_id", "mac_address", "tap", "bridge", "ips", "dhcp_ips",
    "security_groups": [{"id", "rules"}], "remote_group_ips": {group_id: [ips]}}``: the port's groups (its
    project's 'default' one when it names none) with their rules, and the IPv4 members of every group a rule
    refers to.
    """
    ports = await conn.fetch(
        "SELECT p.id, p.network_id, p.project_id, p.mac_address, n.bridge, "
        "array_agg(host(a.ip_address) ORDER BY a.ip_address) FILTER (WHERE a.ip_address IS NOT NULL) AS ips "
        "FROM ports p JOIN networks n ON n.id = p.network_id LEFT JOIN ip_allocations a ON a.port_id = p.id "
        "WHERE p.binding_host = $1 AND p.device_owner LIKE 'compute:%' GROUP BY p.id, n.bridge ORDER BY p.id",
        host,
    )
    if not ports:
        return []
    for project_id in sorted({p["project_id"] for p in ports}):
        await db_sg.ensure_default(conn, project_id)
    groups = await db_sg.groups_of_ports(conn, ports)
    rules: dict[str, list[dict[str, Any]]] = {}
    for r in await db_sg.list_rules(conn, sorted({g for gs in groups.values() for g in gs})):
        rule = {k: r[k] for k in ("direction", "ethertype", "protocol", "port_range_min", "port_range_max",
                                  "remote_group_id")}  # fmt: skip
        rule["remote_ip_prefix"] = str(r["remote_ip_prefix"]) if r["remote_ip_prefix"] is not None else None
        rules.setdefault(r["security_group_id"], []).append(rule)
    remote = sorted({r["remote_group_id"] for rs in rules.values() for r in rs if r["remote_group_id"]})
    members = await db_sg.members(conn, remote)
    dhcp: dict[str, list[str]] = {}
    for r in await conn.fetch(
        "SELECT p.network_id, host(a.ip_address) AS ip FROM ports p JOIN ip_allocations a ON a.port_id = p.id "
        "WHERE p.network_id = ANY($1::text[]) AND p.device_owner = 'network:dhcp'",
        sorted({p["network_id"] for p in ports}),
    ):
        dhcp.setdefault(r["network_id"], []).append(r["ip"])
    return [
        {
            "id": p["id"],
            "network_id": p["network_id"],
            "mac_address": str(p["mac_address"]),
            "tap": f"tap{p['id'][:11]}",
            "bridge": p["bridge"],
            "ips": list(p["ips"] or []),
            "dhcp_ips": dhcp.get(p["network_id"], []),
            "security_groups": [{"id": g, "rules": rules.get(g, [])} for g in groups[p["id"]]],
            "remote_group_ips": {
                g: members.get(g, [])
                for g in {
                    r["remote_group_id"] for g2 in groups[p["id"]] for r in rules.get(g2, []) if r["remote_group_id"]
                }
            },  # fmt: skip
        }
        for p in ports
    ]


class NetworkManager:
    """Ports of instances, for computes. Construct with the service's config and an open ``Database``."""

    def __init__(self, conf: cfg.ConfigOpts, db: Database) -> None:
        self.conf = conf
        self.db = db

    async def get_host_ports(self, ctx: RequestContext, host: str) -> list[dict[str, Any]]:
        """Call. The firewall view of every guest port bound to ``host`` (see ``firewall_ports``). Idempotent."""
        return await self.db.run(lambda conn: firewall_ports(conn, host))

    async def deallocate_for_instance(self, ctx: RequestContext, instance_id: str) -> dict[str, list[str]]:
        """Release what ``instance_id`` holds: delete the ports made for it, unbind the user's ports it was given.

        Idempotent (a second call finds nothing). Returns ``{"deleted": [...], "unbound": [...]}`` port ids.
        """
        result = await self.db.run(lambda conn: db_networks.release_instance_ports(conn, instance_id))
        LOG.info(
            "deallocated instance %s: deleted ports %s, unbound ports %s",
            instance_id,
            result["deleted"] or "none",
            result["unbound"] or "none",
        )
        return result
