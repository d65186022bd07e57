"""Networks, subnets, ports and their IP allocations.

Plain ``async def f(conn, ...)`` functions: the caller owns the transaction (``db.run(fn)``), so a port and its
addresses appear together or not at all. Address and MAC uniqueness come from constraints (the
``ip_allocations`` primary key, ``ports.mac_address`` UNIQUE), never from locks; see ``services.network.ipam``.

List functions take ``project_id`` (None: an admin, who sees everything) and ``filters`` keyed by column name,
each with a list of accepted values (OR within a column, AND across columns), values already typed.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from ipaddress import IPv4Address, ip_address
from typing import Any, NamedTuple

import asyncpg

from common import exceptions
from services.network import ipam

__all__ = [
    "DEVICE_OWNER_COMPUTE",
    "NETWORK_OWNED_PREFIX",
    "NewPort",
    "attach_instance_ports",
    "bind_instance_ports",
    "create_network",
    "create_network_with_subnet",
    "create_port",
    "create_subnet",
    "delete_network",
    "delete_port",
    "delete_subnet",
    "fixed_ips_for",
    "get_network",
    "get_port",
    "get_subnet",
    "instance_ports",
    "list_networks",
    "list_ports",
    "list_subnets",
    "network_visible",
    "port_info",
    "ports_for_device",
    "release_instance_ports",
    "subnet_ids_by_network",
    "subnets_of_network",
    "update_network",
    "update_port",
    "update_subnet",
]

DEVICE_OWNER_COMPUTE = "compute:nova"
# Ports the network service makes for itself (network:dhcp, later): they go away with their network.
NETWORK_OWNED_PREFIX = "network:"
MAC_ATTEMPTS = 16
BRIDGE_ATTEMPTS = 4
_IN_USE_LISTED = 10  # ports named in a "network in use" message before "and N more"


# ----- query building --------------------------------------------------------------------------------------------


class _Query:
    """Accumulates WHERE clauses and their positional arguments."""

    def __init__(self) -> None:
        self.clauses: list[str] = []
        self.args: list[Any] = []

    def arg(self, value: Any) -> str:
        self.args.append(value)
        return f"${len(self.args)}"

    def where(self) -> str:
        return (" WHERE " + " AND ".join(self.clauses)) if self.clauses else ""


# column → (SQL expression, array type) for equality filters; text comparisons never fail on a malformed value
_NETWORK_FILTERS = {
    "id": ("n.id", "text"),
    "name": ("n.name", "text"),
    "description": ("n.description", "text"),
    "project_id": ("n.project_id", "text"),
    "shared": ("n.shared", "boolean"),
    "external": ("n.external", "boolean"),
    "admin_state_up": ("n.admin_state_up", "boolean"),
    "status": ("n.status", "text"),
    "mtu": ("n.mtu", "integer"),
}
_SUBNET_FILTERS = {
    "id": ("s.id", "text"),
    "name": ("s.name", "text"),
    "description": ("s.description", "text"),
    "project_id": ("s.project_id", "text"),
    "network_id": ("s.network_id", "text"),
    "cidr": ("s.cidr::text", "text"),
    "gateway_ip": ("host(s.gateway_ip)", "text"),
    "ip_version": ("s.ip_version", "integer"),
    "enable_dhcp": ("s.enable_dhcp", "boolean"),
}
_PORT_FILTERS = {
    "id": ("p.id", "text"),
    "name": ("p.name", "text"),
    "description": ("p.description", "text"),
    "project_id": ("p.project_id", "text"),
    "network_id": ("p.network_id", "text"),
    "mac_address": ("p.mac_address::text", "text"),
    "admin_state_up": ("p.admin_state_up", "boolean"),
    "status": ("p.status", "text"),
    "device_id": ("p.device_id", "text"),
    "device_owner": ("p.device_owner", "text"),
    "binding_host": ("coalesce(p.binding_host, '')", "text"),
}


def _apply_filters(q: _Query, spec: Mapping[str, tuple[str, str]], filters: Mapping[str, Sequence[Any]]) -> None:
    for column, values in filters.items():
        if column not in spec:
            raise ValueError(f"no filter on column {column!r}")
        expr, typ = spec[column]
        q.clauses.append(f"{expr} = ANY({q.arg(list(values))}::{typ}[])")


async def _page(
    conn: asyncpg.Connection,
    select: str,
    table: str,
    alias: str,
    q: _Query,
    limit: int | None,
    marker: str | None,
) -> list[asyncpg.Record]:
    """Rows in (created_at, id) order; ``marker`` is the id of the last row of the previous page."""
    if marker is not None:
        if await conn.fetchval(f"SELECT 1 FROM {table} WHERE id = $1", marker) is None:
            raise exceptions.NotFound(f"Marker {marker} was not found among {table}.")
        q.clauses.append(
            f"({alias}.created_at, {alias}.id) > (SELECT created_at, id FROM {table} WHERE id = {q.arg(marker)})"
        )
    sql = f"{select}{q.where()} ORDER BY {alias}.created_at, {alias}.id"
    if limit is not None:
        sql += f" LIMIT {q.arg(limit)}"
    return await conn.fetch(sql, *q.args)


# ----- networks --------------------------------------------------------------------------------------------------


async def create_network(
    conn: asyncpg.Connection,
    *,
    project_id: str,
    name: str = "",
    description: str = "",
    shared: bool = False,
    external: bool = False,
    admin_state_up: bool = True,
    mtu: int = 1500,
    dns_domain: str = "",
    bridge_prefix: str = "brq",
    network_id: str | None = None,
) -> asyncpg.Record:
    """Insert a network with its bridge name (``bridge_prefix`` + id[:11]); a bridge-name clash picks a new id."""
    for _ in range(BRIDGE_ATTEMPTS):
        nid = network_id or str(uuid.uuid4())
        row = await conn.fetchrow(
            "INSERT INTO networks (id, project_id, name, description, shared, external, admin_state_up, mtu,"
            " dns_domain, bridge) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"
            " ON CONFLICT (bridge) DO NOTHING RETURNING *",
            nid,
            project_id,
            name,
            description,
            shared,
            external,
            admin_state_up,
            mtu,
            dns_domain,
            ipam.bridge_name(bridge_prefix, nid),
        )
        if row is not None:
            return row
        if network_id is not None:
            break
    raise exceptions.Conflict(f"Bridge name {ipam.bridge_name(bridge_prefix, nid)} of network {nid} is already taken.")


async def get_network(conn: asyncpg.Connection, network_id: str, *, for_update: bool = False) -> asyncpg.Record | None:
    lock = " FOR NO KEY UPDATE" if for_update else ""
    return await conn.fetchrow(f"SELECT * FROM networks WHERE id = $1{lock}", network_id)


def network_visible(network: Mapping[str, Any], project_id: str | None) -> bool:
    """Whether a caller of ``project_id`` (None: admin) may see ``network``: its own, or shared."""
    return project_id is None or network["project_id"] == project_id or bool(network["shared"])


async def list_networks(
    conn: asyncpg.Connection,
    *,
    project_id: str | None,
    filters: Mapping[str, Sequence[Any]] | None = None,
    limit: int | None = None,
    marker: str | None = None,
) -> list[asyncpg.Record]:
    """Networks a caller sees: an admin (``project_id`` None) all, anyone else their own and shared ones."""
    q = _Query()
    if project_id is not None:
        q.clauses.append(f"(n.project_id = {q.arg(project_id)} OR n.shared)")
    _apply_filters(q, _NETWORK_FILTERS, filters or {})
    return await _page(conn, "SELECT n.* FROM networks n", "networks", "n", q, limit, marker)


async def subnet_ids_by_network(conn: asyncpg.Connection, network_ids: Sequence[str]) -> dict[str, list[str]]:
    rows = await conn.fetch(
        "SELECT network_id, id FROM subnets WHERE network_id = ANY($1::text[]) ORDER BY created_at, id",
        list(network_ids),
    )
    out: dict[str, list[str]] = {nid: [] for nid in network_ids}
    for r in rows:
        out[r["network_id"]].append(r["id"])
    return out


_NETWORK_UPDATABLE = {"name", "description", "admin_state_up", "shared", "external", "mtu", "dns_domain"}


async def update_network(conn: asyncpg.Connection, network_id: str, values: Mapping[str, Any]) -> asyncpg.Record | None:
    """Change the given columns (bumping ``revision_number``); None if the network does not exist."""
    return await _update(conn, "networks", network_id, values, _NETWORK_UPDATABLE)


async def _update(
    conn: asyncpg.Connection, table: str, row_id: str, values: Mapping[str, Any], allowed: set[str]
) -> asyncpg.Record | None:
    bad = set(values) - allowed
    if bad:
        raise ValueError(f"cannot update {table} columns {sorted(bad)}")
    q = _Query()
    sets = [f"{col} = {q.arg(val)}" for col, val in values.items()]
    sets += ["updated_at = now()", "revision_number = revision_number + 1"]
    return await conn.fetchrow(f"UPDATE {table} SET {', '.join(sets)} WHERE id = {q.arg(row_id)} RETURNING *", *q.args)


def _describe_ports(ports: Sequence[Mapping[str, Any]]) -> str:
    parts = [
        f"{p['id']} (device {p['device_id'] or 'none'}, owner {p['device_owner'] or 'none'})"
        for p in ports[:_IN_USE_LISTED]
    ]
    if len(ports) > _IN_USE_LISTED:
        parts.append(f"and {len(ports) - _IN_USE_LISTED} more")
    return ", ".join(parts)


async def delete_network(conn: asyncpg.Connection, network_id: str) -> bool:
    """Delete a network with its subnets and its network-owned ports; False if it did not exist.

    ``Conflict`` naming how many ports are in use, and by which devices, when any other port is on it. The row
    lock taken first makes a concurrent port creation either land before (and be counted) or fail after.
    """
    if await get_network(conn, network_id, for_update=True) is None:
        return False
    ports = await conn.fetch(
        "SELECT id, device_id, device_owner FROM ports WHERE network_id = $1 ORDER BY created_at, id", network_id
    )
    in_use = [p for p in ports if not p["device_owner"].startswith(NETWORK_OWNED_PREFIX)]
    if in_use:
        devices = sorted({p["device_id"] for p in in_use if p["device_id"]})
        by = f", by {len(devices)} device{'s' if len(devices) != 1 else ''}" if devices else ""
        raise exceptions.Conflict(
            f"Unable to complete operation on network {network_id}. There {_are(len(in_use))} in use on the "
            f"network{by}: {_describe_ports(in_use)}."
        )
    await conn.execute("DELETE FROM ports WHERE network_id = $1", network_id)
    await conn.execute("DELETE FROM ip_allocations WHERE network_id = $1", network_id)
    await conn.execute("DELETE FROM subnets WHERE network_id = $1", network_id)
    await conn.execute("DELETE FROM networks WHERE id = $1", network_id)
    return True


def _are(n: int) -> str:
    return "is 1 port" if n == 1 else f"are {n} ports"


# ----- subnets ---------------------------------------------------------------------------------------------------


async def create_subnet(
    conn: asyncpg.Connection,
    *,
    network_id: str,
    project_id: str,
    plan: ipam.SubnetPlan,
    name: str = "",
    description: str = "",
    enable_dhcp: bool = True,
    subnet_id: str | None = None,
) -> asyncpg.Record:
    """Insert a validated subnet. ``NotFound`` for a missing network, ``BadRequest`` if the CIDR overlaps another
    subnet of the same network (checked under the network's row lock, so two concurrent creates cannot both pass).
    """
    if await get_network(conn, network_id, for_update=True) is None:
        raise exceptions.NotFound(f"Network {network_id} could not be found.")
    clash = await conn.fetchrow(
        "SELECT id, cidr::text AS cidr FROM subnets WHERE network_id = $1 AND cidr && $2::cidr",
        network_id,
        str(plan.cidr),
    )
    if clash is not None:
        raise exceptions.BadRequest(
            f"Invalid input for operation: Requested subnet with cidr {plan.cidr} for network {network_id} "
            f"overlaps with subnet {clash['id']} ({clash['cidr']})."
        )
    return await conn.fetchrow(
        "INSERT INTO subnets (id, network_id, project_id, name, description, ip_version, cidr, gateway_ip,"
        " enable_dhcp, allocation_pools, dns_nameservers, host_routes)"
        " VALUES ($1, $2, $3, $4, $5, $6, $7::cidr, $8::inet, $9, $10, $11, $12) RETURNING *",
        subnet_id or str(uuid.uuid4()),
        network_id,
        project_id,
        name,
        description,
        plan.ip_version,
        str(plan.cidr),
        str(plan.gateway_ip) if plan.gateway_ip is not None else None,
        enable_dhcp,
        plan.pools_json(),
        list(plan.dns_nameservers),
        [dict(r) for r in plan.host_routes],
    )


async def get_subnet(conn: asyncpg.Connection, subnet_id: str) -> asyncpg.Record | None:
    return await conn.fetchrow("SELECT * FROM subnets WHERE id = $1", subnet_id)


async def subnets_of_network(conn: asyncpg.Connection, network_id: str) -> list[asyncpg.Record]:
    return await conn.fetch("SELECT * FROM subnets WHERE network_id = $1 ORDER BY created_at, id", network_id)


async def list_subnets(
    conn: asyncpg.Connection,
    *,
    project_id: str | None,
    filters: Mapping[str, Sequence[Any]] | None = None,
    limit: int | None = None,
    marker: str | None = None,
) -> list[asyncpg.Record]:
    """Subnets a caller sees: their own, and those of networks they see (shared ones)."""
    q = _Query()
    if project_id is not None:
        p = q.arg(project_id)
        q.clauses.append(
            f"(s.project_id = {p} OR EXISTS (SELECT 1 FROM networks n WHERE n.id = s.network_id"
            f" AND (n.project_id = {p} OR n.shared)))"
        )
    _apply_filters(q, _SUBNET_FILTERS, filters or {})
    return await _page(conn, "SELECT s.* FROM subnets s", "subnets", "s", q, limit, marker)


_SUBNET_UPDATABLE = {
    "name", "description", "enable_dhcp", "gateway_ip", "allocation_pools", "dns_nameservers", "host_routes",
}  # fmt: skip


async def update_subnet(
    conn: asyncpg.Connection, subnet_id: str, values: Mapping[str, Any], plan: ipam.SubnetPlan | None = None
) -> asyncpg.Record | None:
    """Change plain columns, and with ``plan`` the addressing ones (gateway, pools, DNS, routes).

    ``Conflict`` if the new gateway is an address a port holds. Addresses already allocated outside new pools
    stay where they are (as in Neutron); only new allocations follow the pools.
    """
    cols = dict(values)
    if plan is not None:
        if plan.gateway_ip is not None:
            holder = await conn.fetchval(
                "SELECT port_id FROM ip_allocations WHERE subnet_id = $1 AND ip_address = $2::inet",
                subnet_id,
                str(plan.gateway_ip),
            )
            if holder is not None:
                raise exceptions.Conflict(
                    f"Gateway ip {plan.gateway_ip} of subnet {subnet_id} is in use by port {holder}."
                )
        cols.update(
            gateway_ip=ip_address(str(plan.gateway_ip)) if plan.gateway_ip is not None else None,
            allocation_pools=plan.pools_json(),
            dns_nameservers=list(plan.dns_nameservers),
            host_routes=[dict(r) for r in plan.host_routes],
        )
    return await _update(conn, "subnets", subnet_id, cols, _SUBNET_UPDATABLE)


async def delete_subnet(conn: asyncpg.Connection, subnet_id: str) -> bool:
    """Delete a subnet; False if it did not exist. ``Conflict`` while a port (not network-owned) holds an
    address in it."""
    subnet = await conn.fetchrow("SELECT * FROM subnets WHERE id = $1 FOR UPDATE", subnet_id)
    if subnet is None:
        return False
    holders = await conn.fetch(
        "SELECT p.id, p.device_id, p.device_owner FROM ip_allocations a JOIN ports p ON p.id = a.port_id"
        " WHERE a.subnet_id = $1 ORDER BY p.created_at, p.id",
        subnet_id,
    )
    in_use = [p for p in holders if not p["device_owner"].startswith(NETWORK_OWNED_PREFIX)]
    if in_use:
        raise exceptions.Conflict(
            f"Unable to complete operation on subnet {subnet_id}: {len(in_use)} port"
            f"{'s have' if len(in_use) != 1 else ' has'} an IP allocation from it: {_describe_ports(in_use)}."
        )
    await conn.execute("DELETE FROM ip_allocations WHERE subnet_id = $1", subnet_id)
    await conn.execute("DELETE FROM subnets WHERE id = $1", subnet_id)
    return True


async def create_network_with_subnet(
    conn: asyncpg.Connection,
    project_id: str,
    name: str,
    cidr: str,
    shared: bool,
    *,
    bridge_prefix: str = "brq",
    subnet_name: str | None = None,
    dns_nameservers: Sequence[str] = (),
    mtu: int = 1500,
) -> tuple[asyncpg.Record, asyncpg.Record]:
    """The network ``name`` of ``project_id`` with a subnet ``cidr`` on it, made if missing.

    Idempotent by (project, name): a second call returns the same rows, also under concurrency (a transaction
    advisory lock on the name serialises callers). ``Conflict`` if the network exists with other subnets but
    none of ``cidr``. Used by ``stratus-manage bootstrap``.
    """
    plan = ipam.plan_subnet(cidr, dns_nameservers=list(dns_nameservers))
    await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", f"stratus-network:{project_id}:{name}")
    network = await conn.fetchrow(
        "SELECT * FROM networks WHERE project_id = $1 AND name = $2 ORDER BY created_at, id LIMIT 1",
        project_id,
        name,
    )
    if network is None:
        network = await create_network(
            conn, project_id=project_id, name=name, shared=shared, mtu=mtu, bridge_prefix=bridge_prefix
        )
    subnets = await subnets_of_network(conn, network["id"])
    for subnet in subnets:
        if str(subnet["cidr"]) == str(plan.cidr):
            return network, subnet
    if subnets:
        have = ", ".join(f"{s['id']} ({s['cidr']})" for s in subnets)
        raise exceptions.Conflict(
            f"Network {name!r} ({network['id']}) of project {project_id} exists with subnets {have}, not {plan.cidr}."
        )
    subnet = await create_subnet(
        conn,
        network_id=network["id"],
        project_id=project_id,
        plan=plan,
        name=subnet_name if subnet_name is not None else f"{name}-subnet",
    )
    return network, subnet


# ----- ports -----------------------------------------------------------------------------------------------------


def _insert_port_sql(names: Sequence[str], first: int = 1) -> str:
    """INSERT of one port with columns ``names`` as parameters ``$first``..., nothing on a MAC clash."""
    placeholders = ", ".join(f"${i}" for i in range(first, first + len(names)))
    # clock_timestamp(), not now(): ports made in one transaction (an instance's NICs) keep their creation order.
    return (
        f"INSERT INTO ports ({', '.join(names)}, created_at, updated_at)"
        f" VALUES ({placeholders}, clock_timestamp(), clock_timestamp())"
        " ON CONFLICT (mac_address) DO NOTHING RETURNING *"
    )


async def _insert_port(conn: asyncpg.Connection, cols: dict[str, Any]) -> asyncpg.Record | None:
    return await conn.fetchrow(_insert_port_sql(list(cols)), *cols.values())


async def _insert_port_with_address(
    conn: asyncpg.Connection, cols: dict[str, Any], look: tuple[Any, ...]
) -> tuple[dict[str, Any] | None, IPv4Address | None]:
    """The port and, in the same statement, an address from where ``allocate_ip`` looks first (``look``:
    ``ipam.first_look``): (port, address), (port, None) when that look found none, (None, None) on a MAC clash."""
    row = await conn.fetchrow(ipam.allocation_with_port(_insert_port_sql(list(cols), first=8)), *look, *cols.values())
    if row is None:
        return None, None
    port = dict(row)
    ip = port.pop("allocated_ip")
    return port, IPv4Address(ip) if ip is not None else None


def _subnet_for_ip(subnets: Sequence[Mapping[str, Any]], ip: IPv4Address, network_id: str) -> Mapping[str, Any]:
    for s in subnets:
        if ip in ipam.subnet_facts(s)[0]:
            return s
    raise exceptions.BadRequest(f"IP address {ip} is not in any subnet of network {network_id}.")


async def _allocate(
    conn: asyncpg.Connection,
    network_id: str,
    port_id: str,
    subnets: Sequence[Mapping[str, Any]],
    fixed_ips: Sequence[Mapping[str, Any]] | None,
) -> list[tuple[Mapping[str, Any], IPv4Address]]:
    """Allocate the port's addresses; returns each with its subnet."""
    by_id = {s["id"]: s for s in subnets}
    if fixed_ips is None:
        # Neutron's default: one address, from the first IPv4 subnet that still has one.
        exhausted: list[exceptions.IpAddressExhausted] = []
        for subnet in subnets:
            if subnet["ip_version"] != 4:
                continue
            try:
                return [(subnet, await ipam.allocate_ip(conn, subnet, port_id))]  # inserts nothing when it raises
            except exceptions.IpAddressExhausted as e:
                exhausted.append(e)
        if len(exhausted) == 1:
            raise exhausted[0]
        if exhausted:
            raise exceptions.IpAddressExhausted(
                f"No more IP addresses available on network {network_id}: every subnet is full ("
                + ", ".join(f"{s['id']} ({s['cidr']})" for s in subnets if s["ip_version"] == 4)
                + ")."
            )
        return []
    allocated = []
    for req in fixed_ips:
        subnet_id, ip = req.get("subnet_id"), req.get("ip_address")
        if subnet_id is not None:
            subnet = by_id.get(subnet_id)
            if subnet is None:
                raise exceptions.BadRequest(f"Subnet {subnet_id} is not a subnet of network {network_id}.")
        elif ip is not None:
            subnet = _subnet_for_ip(subnets, ipam.check_ip_syntax(ip), network_id)
        else:
            raise exceptions.BadRequest("Invalid input for fixed_ips: each entry needs subnet_id or ip_address.")
        allocated.append((subnet, await ipam.allocate_ip(conn, subnet, port_id, ip_address=ip)))
    return allocated


class NewPort(NamedTuple):
    """What ``create_port`` made: the row, its network (the columns ``port_info`` reads) and its addresses with
    their subnets (enough to describe the port without reading it back)."""

    port: Mapping[str, Any]
    network: Mapping[str, Any]
    addresses: list[tuple[Mapping[str, Any], IPv4Address]]


async def create_port(
    conn: asyncpg.Connection,
    *,
    network_id: str,
    project_id: str,
    base_mac: str,
    fixed_ips: Sequence[Mapping[str, Any]] | None = None,
    mac_address: str | None = None,
    name: str = "",
    description: str = "",
    admin_state_up: bool = True,
    device_id: str = "",
    device_owner: str = "",
    binding_host: str | None = None,
    status: str = "DOWN",
    auto_delete: bool = False,
    dns_name: str = "",
    port_id: str | None = None,
) -> NewPort:
    """Insert a port with a MAC and its fixed IPs, in the caller's transaction.

    ``fixed_ips``: None for one address from the first IPv4 subnet with room; ``[]`` for none; else a list of
    ``{"subnet_id"?, "ip_address"?}`` requests. The MAC is ``mac_address`` (``Conflict`` if taken) or random
    under ``base_mac`` (retried on a clash). Raises ``NotFound`` (network), ``BadRequest``, ``Conflict``,
    ``IpAddressExhausted``; on any error the caller's rollback leaves nothing behind.
    """
    # KEY SHARE: a concurrent delete_network waits for this port (and then refuses), or this fails after it. The
    # network's subnets come with it (one round trip); a network without any gives one row of NULLs.
    rows = await conn.fetch(
        "SELECT n.bridge AS network_bridge, n.mtu AS network_mtu, n.dns_domain AS network_dns_domain, s.*"
        " FROM networks n LEFT JOIN subnets s ON s.network_id = n.id WHERE n.id = $1"
        " ORDER BY s.created_at, s.id FOR KEY SHARE OF n",
        network_id,
    )
    if not rows:
        raise exceptions.NotFound(f"Network {network_id} could not be found.")
    network = {k: rows[0][f"network_{k}"] for k in ("bridge", "mtu", "dns_domain")}
    subnets = [r for r in rows if r["id"] is not None]
    cols: dict[str, Any] = {
        "id": port_id or str(uuid.uuid4()),
        "network_id": network_id,
        "project_id": project_id,
        "name": name,
        "description": description,
        "mac_address": None,
        "admin_state_up": admin_state_up,
        "status": status,
        "device_id": device_id,
        "device_owner": device_owner,
        "binding_host": binding_host,
        "auto_delete": auto_delete,
        "dns_name": dns_name,
    }
    port: Mapping[str, Any] | None = None
    if mac_address is not None:
        cols["mac_address"] = ipam.parse_mac(mac_address)
        port = await _insert_port(conn, cols)
        if port is None:
            raise exceptions.Conflict(
                f"Unable to complete operation for network {network_id}. The mac address {mac_address} is in use."
            )
        return NewPort(port, network, await _allocate(conn, network_id, port["id"], subnets, fixed_ips))
    # The usual port (a random MAC, one address from the first IPv4 subnet) is made with its address in one
    # statement when the first look finds one; ``_allocate`` does the rest of the search when it does not.
    subnet = next((s for s in subnets if s["ip_version"] == 4), None) if fixed_ips is None else None
    look = ipam.first_look(subnet) if subnet is not None else None
    ip = None
    for _ in range(MAC_ATTEMPTS):
        cols["mac_address"] = ipam.random_mac(base_mac)
        if look is not None:
            port, ip = await _insert_port_with_address(conn, cols, look)
        else:
            port = await _insert_port(conn, cols)
        if port is not None:
            break
    else:
        raise exceptions.Conflict(f"Could not find a free MAC address under {base_mac} in {MAC_ATTEMPTS} tries.")
    if ip is not None:
        return NewPort(port, network, [(subnet, ip)])
    return NewPort(port, network, await _allocate(conn, network_id, port["id"], subnets, fixed_ips))


async def get_port(conn: asyncpg.Connection, port_id: str, *, for_update: bool = False) -> asyncpg.Record | None:
    lock = " FOR UPDATE" if for_update else ""
    return await conn.fetchrow(f"SELECT * FROM ports WHERE id = $1{lock}", port_id)


# The ports a server holds: bound to it by the cloud (device_owner compute:nova) and of the server's own project.
# Every lookup by device goes through this condition, so a port that names another project's server as its
# device (which the API refuses, but a row is not a proof) is never taken for one of its ports.
_SERVER_PORTS = (
    "FROM ports p JOIN instances i ON i.id = p.device_id AND i.project_id = p.project_id"
    f" WHERE p.device_id = $1 AND p.device_owner = '{DEVICE_OWNER_COMPUTE}'"
)


async def ports_for_device(conn: asyncpg.Connection, device_id: str) -> list[asyncpg.Record]:
    """The ports of server ``device_id`` (``_SERVER_PORTS``: the cloud's binding, the server's project), also
    once it is deleted."""
    return await conn.fetch(f"SELECT p.* {_SERVER_PORTS} ORDER BY p.created_at, p.id", device_id)


async def fixed_ips_for(conn: asyncpg.Connection, port_ids: Sequence[str]) -> dict[str, list[dict[str, str]]]:
    """``{port_id: [{"subnet_id", "ip_address"}]}``, addresses in numeric order, for every id asked."""
    rows = await conn.fetch(
        "SELECT port_id, subnet_id, host(ip_address) AS ip FROM ip_allocations WHERE port_id = ANY($1::text[])"
        " ORDER BY port_id, subnet_id, ip_address",
        list(port_ids),
    )
    out: dict[str, list[dict[str, str]]] = {pid: [] for pid in port_ids}
    for r in rows:
        out[r["port_id"]].append({"subnet_id": r["subnet_id"], "ip_address": r["ip"]})
    return out


async def list_ports(
    conn: asyncpg.Connection,
    *,
    project_id: str | None,
    filters: Mapping[str, Sequence[Any]] | None = None,
    fixed_ips: Sequence[Mapping[str, str]] = (),
    limit: int | None = None,
    marker: str | None = None,
) -> list[asyncpg.Record]:
    """Ports a caller sees (their project's; an admin all). ``fixed_ips``: each entry (``ip_address``,
    ``subnet_id`` and/or ``ip_address_substr``) must match one of the port's addresses."""
    q = _Query()
    if project_id is not None:
        q.clauses.append(f"p.project_id = {q.arg(project_id)}")
    _apply_filters(q, _PORT_FILTERS, filters or {})
    for want in fixed_ips:
        conds = ["a.port_id = p.id"]
        if "ip_address" in want:
            conds.append(f"host(a.ip_address) = {q.arg(want['ip_address'])}")
        if "subnet_id" in want:
            conds.append(f"a.subnet_id = {q.arg(want['subnet_id'])}")
        if "ip_address_substr" in want:
            conds.append(f"strpos(host(a.ip_address), {q.arg(want['ip_address_substr'])}) > 0")
        q.clauses.append(f"EXISTS (SELECT 1 FROM ip_allocations a WHERE {' AND '.join(conds)})")
    return await _page(conn, "SELECT p.* FROM ports p", "ports", "p", q, limit, marker)


_PORT_UPDATABLE = {
    "name", "description", "admin_state_up", "device_id", "device_owner", "binding_host", "status", "dns_name",
    "auto_delete",
}  # fmt: skip


async def update_port(
    conn: asyncpg.Connection,
    port_id: str,
    values: Mapping[str, Any],
    *,
    fixed_ips: Sequence[Mapping[str, Any]] | None = None,
) -> asyncpg.Record | None:
    """Change the given columns; with ``fixed_ips``, make the port's addresses exactly those requested.

    An entry naming an address keeps it if the port holds it, else allocates it; an entry naming only a subnet
    keeps one address the port holds there, else allocates one. Addresses no entry claims are released.
    None if the port does not exist.
    """
    port = await get_port(conn, port_id, for_update=True)
    if port is None:
        return None
    if fixed_ips is not None:
        await _replace_fixed_ips(conn, port, fixed_ips)
    return await _update(conn, "ports", port_id, values, _PORT_UPDATABLE)


async def _replace_fixed_ips(
    conn: asyncpg.Connection, port: Mapping[str, Any], wanted: Sequence[Mapping[str, Any]]
) -> None:
    network_id = port["network_id"]
    subnets = await subnets_of_network(conn, network_id)
    held = (await fixed_ips_for(conn, [port["id"]]))[port["id"]]
    keep: list[dict[str, str]] = []
    new: list[Mapping[str, Any]] = []
    for req in wanted:
        ip, sid = req.get("ip_address"), req.get("subnet_id")
        if ip is None and sid is None:
            raise exceptions.BadRequest("Invalid input for fixed_ips: each entry needs subnet_id or ip_address.")
        match = next(
            (
                h
                for h in held
                if h not in keep
                and (ip is None or h["ip_address"] == str(ipam.check_ip_syntax(ip)))
                and (sid is None or h["subnet_id"] == sid)
            ),
            None,
        )
        if match is not None:
            keep.append(match)
        else:
            new.append(req)
    for h in held:
        if h not in keep:
            await conn.execute(
                "DELETE FROM ip_allocations WHERE subnet_id = $1 AND ip_address = $2::inet AND port_id = $3",
                h["subnet_id"],
                h["ip_address"],
                port["id"],
            )
    if new:
        await _allocate(conn, network_id, port["id"], subnets, new)


async def delete_port(conn: asyncpg.Connection, port_id: str) -> bool:
    """Delete a port and free its addresses (cascade); False if it did not exist."""
    return await conn.fetchval("DELETE FROM ports WHERE id = $1 RETURNING true", port_id) is not None


# ----- an instance's ports -----------------------------------------------------------------------------------------


def port_info(
    port: Mapping[str, Any],
    network: Mapping[str, Any],
    fixed_ips: Sequence[Mapping[str, str]],
    subnets: Mapping[str, Mapping[str, Any]],
) -> dict[str, Any]:
    """The port dict a compute builds a guest's NIC from (``request_spec["ports"]``, docs/internals.md).

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


async def _describe(conn: asyncpg.Connection, ports: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    if not ports:
        return []
    # Two round trips whatever the count: the networks, and the addresses with their subnets.
    nets = {
        r["id"]: r
        for r in await conn.fetch(
            "SELECT * FROM networks WHERE id = ANY($1::text[])", list({p["network_id"] for p in ports})
        )
    }
    ips: dict[str, list[dict[str, str]]] = {p["id"]: [] for p in ports}
    subnets: dict[str, Mapping[str, Any]] = {}
    for r in await conn.fetch(
        "SELECT a.port_id, a.subnet_id, host(a.ip_address) AS ip, s.cidr, s.gateway_ip FROM ip_allocations a"
        " JOIN subnets s ON s.id = a.subnet_id WHERE a.port_id = ANY($1::text[])"
        " ORDER BY a.port_id, a.subnet_id, a.ip_address",
        list(ips),
    ):
        ips[r["port_id"]].append({"subnet_id": r["subnet_id"], "ip_address": r["ip"]})
        subnets[r["subnet_id"]] = r
    return [port_info(p, nets[p["network_id"]], ips[p["id"]], subnets) for p in ports]


async def attach_instance_ports(
    conn: asyncpg.Connection,
    *,
    instance_id: str,
    project_id: str,
    hostname: str,
    networks: Sequence[Mapping[str, Any]],
    base_mac: str,
) -> list[dict[str, Any]]:
    """Give a new instance one port per entry of ``networks``, in the caller's transaction; the port dicts
    (``port_info``) in request order.

    Entries are as the API resolved them (visible to the caller): ``{"uuid": network_id, "fixed_ip"?}`` makes
    a port that ``release_instance_ports`` deletes; ``{"port": port_id}`` attaches the user's port, which
    release only detaches. The ports stay unbound (no host) until the scheduler's claim binds them
    (``bind_instance_ports``). Raises ``Conflict`` (the port went to another device meanwhile, address taken),
    ``IpAddressExhausted``, ``BadRequest``, ``NotFound``; the caller's rollback leaves nothing behind.
    """
    attached = {
        "device_id": instance_id,
        "device_owner": DEVICE_OWNER_COMPUTE,
        "binding_host": None,
        "status": "DOWN",
        "dns_name": hostname,
    }
    # A port made here is described from what making it returned; only the user's own ports are read back.
    made: dict[int, dict[str, Any]] = {}
    existing: dict[int, Mapping[str, Any]] = {}
    for n, req in enumerate(networks):
        if req.get("port"):
            port = await get_port(conn, req["port"], for_update=True)
            if port is None or port["project_id"] != project_id:
                # Checked here too, not only by the API: a server only ever holds ports of its own project.
                raise exceptions.NotFound(f"Port {req['port']} could not be found.")
            if port["device_id"] not in ("", instance_id):
                raise exceptions.Conflict(
                    f"Port {port['id']} is still in use by device {port['device_id']} ({port['device_owner']})."
                )
            existing[n] = await _update(conn, "ports", port["id"], attached, _PORT_UPDATABLE)
        else:
            fixed = [{"ip_address": req["fixed_ip"]}] if req.get("fixed_ip") else None
            port, network, ips = await create_port(
                conn, network_id=req["uuid"], project_id=project_id, base_mac=base_mac, fixed_ips=fixed,
                auto_delete=True, **attached,
            )  # fmt: skip
            ips.sort(key=lambda a: (a[0]["id"], a[1]))
            fixed_ips = [{"subnet_id": subnet["id"], "ip_address": str(ip)} for subnet, ip in ips]
            made[n] = port_info(port, network, fixed_ips, {subnet["id"]: subnet for subnet, _ in ips})
    described = dict(zip(existing, await _describe(conn, list(existing.values())), strict=True))
    return [made[n] if n in made else described[n] for n in range(len(networks))]


BIND_INSTANCE_PORTS = (
    "UPDATE ports SET binding_host = {host}, status = 'ACTIVE', updated_at = now(), "
    "revision_number = revision_number + 1 "
    f"WHERE device_id = {{instance}} AND device_owner = '{DEVICE_OWNER_COMPUTE}' "
    "AND project_id = (SELECT project_id FROM instances WHERE id = {instance})"
)
"""``bind_instance_ports`` as SQL with ``{host}`` and ``{instance}`` to fill in (the scheduler's one-statement
claim embeds it). Only the server's own ports bind (its project's, bound to it by the cloud)."""


async def bind_instance_ports(conn: asyncpg.Connection, instance_id: str, host: str) -> None:
    """Bind the instance's ports to ``host`` (the host its claim is on): the compute's firewall sync reads them
    by host. Every claim binds again, so a rescheduled build's ports follow it."""
    await conn.execute(BIND_INSTANCE_PORTS.format(host="$2", instance="$1"), instance_id, host)


async def instance_ports(
    conn: asyncpg.Connection, instance_id: str, networks: Sequence[Any] = ()
) -> list[dict[str, Any]]:
    """The instance's port dicts (``port_info``), in the order of its requested ``networks``."""
    return await _describe(conn, _in_request_order(await ports_for_device(conn, instance_id), networks))


async def release_instance_ports(conn: asyncpg.Connection, instance_id: str) -> dict[str, list[str]]:
    """Give back what an instance holds: delete the ports made for it, detach the user's ports it was given.

    Idempotent (a second call finds nothing). Returns ``{"deleted": [...], "unbound": [...]}`` port ids.
    """
    deleted, unbound = [], []
    for port in await conn.fetch(f"SELECT p.* {_SERVER_PORTS} ORDER BY p.id FOR UPDATE OF p", instance_id):
        if port["auto_delete"]:
            await delete_port(conn, port["id"])
            deleted.append(port["id"])
        else:
            await _update(
                conn,
                "ports",
                port["id"],
                {"device_id": "", "device_owner": "", "binding_host": None, "status": "DOWN", "dns_name": ""},
                _PORT_UPDATABLE,
            )
            unbound.append(port["id"])
    return {"deleted": sorted(deleted), "unbound": sorted(unbound)}
