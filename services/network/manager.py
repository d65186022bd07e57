"""The network service's RPC endpoint (topic ``network``): ports for instances.

A plain class with the database injected: ``common.rpc`` maps ``allocate_for_instance`` and
``deallocate_for_instance`` messages onto it, and tests call it directly. Both methods are idempotent, because
a call may be retried or redelivered after a broker failover.

DHCP (dnsmasq per network namespace), DNS and the metadata service attach here later: they read the same
ports, subnets and ``dns_name`` the methods below write.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import asyncpg
from oslo_config import cfg

from common import exceptions
from common.context import RequestContext
from common.db import networks as db_networks
from common.db import security_groups as db_sg
from common.db.pool import Database

__all__ = ["NetworkManager", "port_info", "firewall_ports"]

LOG = logging.getLogger(__name__)


def port_info(
    port: Mapping[str, Any],
    network: Mapping[str, Any],
    fixed_ips: Sequence[Mapping[str, str]],
    subnets: Mapping[str, Mapping[str, Any]],
) -> dict[str, Any]:
    """The port dict of the ``allocate_for_instance`` contract (docs/internals.md).

    ``cidr`` and ``gateway_ip`` are those of the subnet of the port's first address (None without one).
    """
    first = subnets.get(fixed_ips[0]["subnet_id"]) if fixed_ips else None
    gateway = first["gateway_ip"] if first is not None else None
    return {
        "id": port["id"],
        "network_id": port["network_id"],
        "mac_address": str(port["mac_address"]),
        "fixed_ips": [{"subnet_id": f["subnet_id"], "ip_address": f["ip_address"]} for f in fixed_ips],
        "bridge": network["bridge"],
        "mtu": network["mtu"],
        "cidr": str(first["cidr"]) if first is not None else None,
        "gateway_ip": str(gateway).split("/")[0] if gateway is not None else None,
        # For the compute's config drive (common/metadata.py): the guest's name in DNS, as metadata serves it.
        "dns_name": port.get("dns_name") or "",
        "dns_domain": network.get("dns_domain") or "",
    }


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


def _in_request_order(ports: Sequence[Mapping[str, Any]], networks: Sequence[Any]) -> list[Mapping[str, Any]]:
    """An instance's ports in the order its request named them (NIC order matters to the guest).

    A ``{"port"}`` entry takes that port; a ``{"uuid"}`` entry the oldest port made for it on that network.
    Ports no entry claims (none, unless the request changed) follow in creation order.
    """
    remaining = list(ports)
    ordered = []
    for req in networks:
        if not isinstance(req, Mapping):
            continue
        if req.get("port"):
            match = next((p for p in remaining if p["id"] == req["port"]), None)
        else:
            match = next((p for p in remaining if p["network_id"] == req.get("uuid") and p["auto_delete"]), None)
        if match is not None:
            ordered.append(match)
            remaining.remove(match)
    return ordered + remaining


class NetworkManager:
    """IP and MAC allocation for instances. Construct with the service's config and an open ``Database``."""

    def __init__(self, conf: cfg.ConfigOpts, db: Database) -> None:
        self.conf = conf
        self.db = db

    async def allocate_for_instance(
        self,
        ctx: RequestContext,
        instance_id: str,
        project_id: str,
        hostname: str,
        host: str,
        networks: list[dict[str, Any]],
    ) -> list[dict[str, Any]]:
        """Give ``instance_id`` one port per entry of ``networks``; returns the port dicts, in request order.

        An entry is ``{"uuid": network_id}`` (optionally with ``"fixed_ip"``) for a new port that deallocation
        will delete, or ``{"port": port_id}`` for a port the user made, which is bound here and only unbound by
        deallocation. Idempotent: when the instance already has ports (a retried or redelivered call), those
        are returned and nothing is made. All or nothing: one transaction. Raises ``NotFound`` (network or port
        not visible to ``project_id``; an admin ``ctx`` sees every one, as the API let it ask for any),
        ``Conflict`` (port bound to another device, address taken), ``IpAddressExhausted``, ``BadRequest``.
        """

        async def txn(conn: asyncpg.Connection) -> list[dict[str, Any]]:
            # Serialise calls for one instance: the existence check below and the inserts must not interleave.
            await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", f"stratus-instance-ports:{instance_id}")
            existing = await db_networks.ports_for_device(conn, instance_id)
            if existing:
                LOG.info("instance %s already has ports %s", instance_id, [p["id"] for p in existing])
                return await self._describe(conn, _in_request_order(existing, networks))
            ports = []
            for index, req in enumerate(networks):
                ports.append(await self._port_for(conn, ctx, req, index, instance_id, project_id, hostname, host))
            return await self._describe(conn, ports)

        result = await self.db.run(txn)
        LOG.info(
            "allocated for instance %s on %s: %s",
            instance_id,
            host,
            ", ".join(f"{p['id']} {p['mac_address']} {[f['ip_address'] for f in p['fixed_ips']]}" for p in result)
            or "no ports",
        )
        return result

    async def _port_for(
        self,
        conn: asyncpg.Connection,
        ctx: RequestContext,
        req: Mapping[str, Any],
        index: int,
        instance_id: str,
        project_id: str,
        hostname: str,
        host: str,
    ) -> asyncpg.Record:
        binding = {
            "device_id": instance_id,
            "device_owner": db_networks.DEVICE_OWNER_COMPUTE,
            "binding_host": host,
            "status": "ACTIVE",
            "dns_name": hostname,
        }
        if not isinstance(req, Mapping):
            raise exceptions.BadRequest(f"networks[{index}] must be an object, not {req!r}")
        if req.get("port"):
            port = await db_networks.get_port(conn, req["port"], for_update=True)
            if port is None or not (ctx.is_admin or port["project_id"] == project_id):
                raise exceptions.NotFound(f"Port {req['port']} could not be found.")
            if port["device_id"] not in ("", instance_id):
                raise exceptions.Conflict(
                    f"Port {port['id']} is still in use by device {port['device_id']} ({port['device_owner']})."
                )
            updated = await db_networks.update_port(conn, port["id"], binding)
            assert updated is not None
            return updated
        if req.get("uuid"):
            network = await db_networks.get_network(conn, req["uuid"])
            if network is None or not db_networks.network_visible(network, None if ctx.is_admin else project_id):
                raise exceptions.NotFound(f"Network {req['uuid']} could not be found.")
            fixed = [{"ip_address": req["fixed_ip"]}] if req.get("fixed_ip") else None
            return await db_networks.create_port(
                conn,
                network_id=network["id"],
                project_id=project_id,
                base_mac=self.conf.network.base_mac,
                fixed_ips=fixed,
                auto_delete=True,
                **binding,
            )
        raise exceptions.BadRequest(f"networks[{index}] needs 'uuid' (a network id) or 'port' (a port id): {req!r}")

    async def _describe(self, conn: asyncpg.Connection, ports: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
        ips = await db_networks.fixed_ips_for(conn, [p["id"] for p in ports])
        nets = {
            r["id"]: r
            for r in await conn.fetch(
                "SELECT * FROM networks WHERE id = ANY($1::text[])", list({p["network_id"] for p in ports})
            )
        }
        subnet_ids = list({f["subnet_id"] for fl in ips.values() for f in fl})
        subnets = {r["id"]: r for r in await conn.fetch("SELECT * FROM subnets WHERE id = ANY($1::text[])", subnet_ids)}
        return [port_info(p, nets[p["network_id"]], ips[p["id"]], subnets) for p in ports]

    async def get_host_ports(self, ctx: RequestContext, host: str) -> list[dict[str, Any]]:
        """Call. The firewall view of every guest port bound to ``host`` (see ``firewall_ports``). Idempotent."""
        return await self.db.run(lambda conn: firewall_ports(conn, host))

    async def deallocate_for_instance(self, ctx: RequestContext, instance_id: str) -> dict[str, list[str]]:
        """Release what ``instance_id`` holds: delete the ports made for it, unbind the user's ports it was given.

        Idempotent (a second call finds nothing). Returns ``{"deleted": [...], "unbound": [...]}`` port ids.
        """

        async def txn(conn: asyncpg.Connection) -> dict[str, list[str]]:
            await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", f"stratus-instance-ports:{instance_id}")
            deleted, unbound = [], []
            for port in await db_networks.ports_for_device(conn, instance_id):
                if port["auto_delete"]:
                    await db_networks.delete_port(conn, port["id"])
                    deleted.append(port["id"])
                else:
                    await db_networks.update_port(
                        conn,
                        port["id"],
                        {"device_id": "", "device_owner": "", "binding_host": None, "status": "DOWN", "dns_name": ""},
                    )
                    unbound.append(port["id"])
            return {"deleted": deleted, "unbound": unbound}

        result = await self.db.run(txn)
        LOG.info(
            "deallocated instance %s: deleted ports %s, unbound ports %s",
            instance_id,
            result["deleted"] or "none",
            result["unbound"] or "none",
        )
        return result
