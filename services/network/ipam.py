"""IP address management: subnet arithmetic (pure) and address allocation (one SQL statement per pool and try).

The arithmetic half (``plan_subnet``, ``check_requested_ip``, ``random_mac``, ``bridge_name``) touches no
database and is what the unit tests exercise. The allocation half (``allocate_ip``) never waits on a lock: the
``ip_allocations`` primary key ``(subnet_id, ip_address)`` makes a double allocation impossible, and one
statement per pool finds the lowest free addresses from the used rows alone (``lowest_free``'s query) and
inserts the first of them that no concurrent transaction is inserting (a transaction-level advisory try-lock);
an allocator that finds them all taken looks again, further. A big pool is searched in windows at random points
first, so that statement reads at most ``SEARCH_WINDOW`` used rows until the pool is nearly full.

This module imports nothing from ``common.db`` so that ``common.db.networks`` (and ``stratus-manage bootstrap``)
can build on it without a cycle.
"""

from __future__ import annotations

import ipaddress
import random
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network
from typing import Any

import asyncpg

from common import exceptions

__all__ = [
    "AUTO",
    "IFNAMSIZ",
    "MAX_DNS_NAMESERVERS",
    "MAX_HOST_ROUTES",
    "Pool",
    "SubnetPlan",
    "allocate_ip",
    "bridge_name",
    "check_ip_syntax",
    "check_requested_ip",
    "default_gateway",
    "default_pools",
    "in_pools",
    "lowest_free",
    "parse_cidr",
    "parse_mac",
    "plan_subnet",
    "pool_size",
    "pools_from_json",
    "random_mac",
    "subnet_facts",
]

IFNAMSIZ = 16  # Linux interface names: at most 15 characters plus the NUL
MAX_DNS_NAMESERVERS = 5  # Neutron's default max_dns_nameservers
MAX_HOST_ROUTES = 20  # Neutron's default max_subnet_host_routes
MIN_PREFIXLEN = 8  # a /8 already holds 16M addresses; anything larger is a typo
MAX_PREFIXLEN = 30  # a /30 leaves one gateway and one port: the smallest useful subnet
CANDIDATE_BATCH = 16  # free addresses tried per look at the used set
# A pool bigger than SEARCH_WINDOW is searched in up to SEARCH_TRIES windows of that many addresses at random
# points before the whole of it (see ``allocate_ip``).
SEARCH_WINDOW = 256
SEARCH_TRIES = 3

AUTO: Any = object()
"""``plan_subnet(gateway_ip=AUTO)``: the first host of the CIDR (Neutron's default)."""


@dataclass(frozen=True, order=True)
class Pool:
    """An inclusive range of allocatable addresses."""

    start: IPv4Address
    end: IPv4Address

    def to_dict(self) -> dict[str, str]:
        return {"start": str(self.start), "end": str(self.end)}

    def __contains__(self, ip: object) -> bool:
        return isinstance(ip, IPv4Address) and self.start <= ip <= self.end

    @property
    def size(self) -> int:
        return int(self.end) - int(self.start) + 1


@dataclass(frozen=True)
class SubnetPlan:
    """A validated, normalised subnet: what gets stored, and what allocation reads back."""

    cidr: IPv4Network
    gateway_ip: IPv4Address | None
    allocation_pools: tuple[Pool, ...]
    dns_nameservers: tuple[str, ...] = ()
    host_routes: tuple[dict[str, str], ...] = field(default=())
    ip_version: int = 4

    def pools_json(self) -> list[dict[str, str]]:
        return [p.to_dict() for p in self.allocation_pools]


# ----- parsing ---------------------------------------------------------------------------------------------------


def _bad(field_name: str, value: object, reason: str) -> exceptions.BadRequest:
    return exceptions.BadRequest(f"Invalid input for {field_name}. Reason: {value!a} {reason}.")


def parse_cidr(cidr: object) -> IPv4Network:
    """An IPv4 network in canonical form; ``BadRequest`` for host bits set, IPv6, or an unusable size."""
    if not isinstance(cidr, str):
        raise _bad("cidr", cidr, "is not a CIDR string")
    try:
        net = ipaddress.ip_network(cidr, strict=False)
    except ValueError:
        raise _bad("cidr", cidr, "is not a valid CIDR") from None
    if net.version != 4:
        raise _bad("cidr", cidr, "is not IPv4 (only ip_version 4 is supported)")
    if str(net) != cidr.strip():
        raise _bad("cidr", cidr, f"isn't a recommended CIDR, use {net}")
    if not MIN_PREFIXLEN <= net.prefixlen <= MAX_PREFIXLEN:
        raise _bad("cidr", cidr, f"must have a prefix length between /{MIN_PREFIXLEN} and /{MAX_PREFIXLEN}")
    return net


def _parse_ip(field_name: str, value: object) -> IPv4Address:
    if not isinstance(value, str):
        raise _bad(field_name, value, "is not an IP address string")
    try:
        ip = ipaddress.ip_address(value)
    except ValueError:
        raise _bad(field_name, value, "is not a valid IP address") from None
    if ip.version != 4:
        raise _bad(field_name, value, "is not an IPv4 address")
    return ip


def check_ip_syntax(value: object, field_name: str = "fixed_ips") -> IPv4Address:
    """An IPv4 address from a request; ``BadRequest`` naming ``field_name`` otherwise."""
    return _parse_ip(field_name, value)


def _host_bounds(cidr: IPv4Network) -> tuple[IPv4Address, IPv4Address]:
    """First and last host address: the network and broadcast addresses are never handed out."""
    return cidr.network_address + 1, cidr.broadcast_address - 1


def default_gateway(cidr: IPv4Network) -> IPv4Address:
    """The first host address, as Neutron picks it."""
    return _host_bounds(cidr)[0]


def default_pools(cidr: IPv4Network, gateway: IPv4Address | None) -> list[Pool]:
    """Every host address of ``cidr`` except the gateway: one pool, or two around a gateway in the middle."""
    first, last = _host_bounds(cidr)
    if gateway is None or not first <= gateway <= last:
        return [Pool(first, last)]
    pools = []
    if gateway > first:
        pools.append(Pool(first, gateway - 1))
    if gateway < last:
        pools.append(Pool(gateway + 1, last))
    return pools


def pools_from_json(pools: Iterable[Mapping[str, str]]) -> list[Pool]:
    """Pools as stored (``[{"start", "end"}]``) back into ``Pool`` objects, sorted."""
    return sorted(Pool(IPv4Address(p["start"]), IPv4Address(p["end"])) for p in pools)


def _check_pools(cidr: IPv4Network, gateway: IPv4Address | None, raw: object) -> list[Pool]:
    if not isinstance(raw, list | tuple):
        raise _bad("allocation_pools", raw, "is not a list")
    first, last = _host_bounds(cidr)
    pools = []
    for item in raw:
        if not isinstance(item, Mapping) or set(item) != {"start", "end"}:
            raise _bad("allocation_pools", item, "must be an object with exactly 'start' and 'end'")
        start = _parse_ip("allocation_pools", item["start"])
        end = _parse_ip("allocation_pools", item["end"])
        if start > end:
            raise exceptions.BadRequest(f"Allocation pool {start}-{end} is invalid: start is after end.")
        if not (first <= start and end <= last):
            raise exceptions.BadRequest(
                f"The allocation pool {start}-{end} spans beyond the usable addresses of subnet {cidr} "
                f"({first}-{last})."
            )
        pools.append(Pool(start, end))
    pools.sort()
    for a, b in zip(pools, pools[1:], strict=False):
        if b.start <= a.end:
            raise exceptions.BadRequest(f"Found overlapping allocation pools: {a.start}-{a.end} and {b.start}-{b.end}.")
    if gateway is not None:
        for p in pools:
            if gateway in p:
                raise exceptions.BadRequest(f"Gateway ip {gateway} conflicts with allocation pool {p.start}-{p.end}.")
    return pools


def _check_nameservers(raw: object) -> tuple[str, ...]:
    if not isinstance(raw, list | tuple):
        raise _bad("dns_nameservers", raw, "is not a list")
    if len(raw) > MAX_DNS_NAMESERVERS:
        raise exceptions.BadRequest(f"Number of DNS nameservers exceeds the limit {MAX_DNS_NAMESERVERS}.")
    out: list[str] = []
    for item in raw:
        ip = str(_parse_ip("dns_nameservers", item))
        if ip in out:
            raise _bad("dns_nameservers", item, "is a duplicate nameserver")
        out.append(ip)
    return tuple(out)


def _check_routes(raw: object) -> tuple[dict[str, str], ...]:
    if not isinstance(raw, list | tuple):
        raise _bad("host_routes", raw, "is not a list")
    if len(raw) > MAX_HOST_ROUTES:
        raise exceptions.BadRequest(f"Number of host routes exceeds the limit {MAX_HOST_ROUTES}.")
    out: list[dict[str, str]] = []
    for item in raw:
        if not isinstance(item, Mapping) or set(item) != {"destination", "nexthop"}:
            raise _bad("host_routes", item, "must be an object with exactly 'destination' and 'nexthop'")
        dest = item["destination"]
        try:
            dnet = ipaddress.ip_network(dest, strict=True) if isinstance(dest, str) else None
        except ValueError:
            dnet = None
        if dnet is None or dnet.version != 4:
            raise _bad("host_routes", dest, "is not a valid IPv4 destination CIDR")
        nexthop = _parse_ip("host_routes", item["nexthop"])
        route = {"destination": str(dnet), "nexthop": str(nexthop)}
        if route in out:
            raise _bad("host_routes", item, "is a duplicate route")
        out.append(route)
    return tuple(out)


def plan_subnet(
    cidr: str | IPv4Network,
    *,
    gateway_ip: Any = AUTO,
    allocation_pools: object = None,
    dns_nameservers: object = (),
    host_routes: object = (),
    ip_version: object = 4,
) -> SubnetPlan:
    """Validate a subnet request and fill in Neutron's defaults. Pure; raises ``BadRequest`` naming the field.

    ``gateway_ip``: ``AUTO`` (first host), ``None`` (no gateway) or an address that must be a host of ``cidr``.
    ``allocation_pools``: ``None`` for every host but the gateway, else a list of ``{"start", "end"}`` inside the
    host range, not overlapping, not containing the gateway.
    """
    if ip_version != 4:
        raise _bad("ip_version", ip_version, "is not supported: only ip_version 4 is")
    net = cidr if isinstance(cidr, IPv4Network) else parse_cidr(cidr)
    first, last = _host_bounds(net)
    if gateway_ip is AUTO:
        gateway = default_gateway(net)
    elif gateway_ip is None:
        gateway = None
    else:
        gateway = _parse_ip("gateway_ip", gateway_ip)
        if gateway not in net:
            raise exceptions.BadRequest(f"Gateway IP {gateway} is not in subnet {net}.")
        if not first <= gateway <= last:
            raise exceptions.BadRequest(f"Gateway IP {gateway} is the network or broadcast address of {net}.")
    pools = default_pools(net, gateway) if allocation_pools is None else _check_pools(net, gateway, allocation_pools)
    return SubnetPlan(
        cidr=net,
        gateway_ip=gateway,
        allocation_pools=tuple(pools),
        dns_nameservers=_check_nameservers(dns_nameservers),
        host_routes=_check_routes(host_routes),
        ip_version=4,
    )


# ----- choosing addresses ----------------------------------------------------------------------------------------


def pool_size(pools: Iterable[Pool]) -> int:
    return sum(p.size for p in pools)


def in_pools(ip: IPv4Address, pools: Iterable[Pool]) -> bool:
    return any(ip in p for p in pools)


def check_requested_ip(
    ip_address: object, *, subnet_id: str, cidr: IPv4Network, gateway_ip: IPv4Address | None, pools: Sequence[Pool]
) -> IPv4Address:
    """A requested fixed IP, validated: inside the subnet, inside one of its pools, not its gateway."""
    ip = _parse_ip("fixed_ips", ip_address)
    if ip not in cidr:
        raise exceptions.BadRequest(f"IP address {ip} is not a valid IP for subnet {subnet_id} ({cidr}).")
    if gateway_ip is not None and ip == gateway_ip:
        raise exceptions.Conflict(f"IP address {ip} is the gateway of subnet {subnet_id} ({cidr}).")
    if not in_pools(ip, pools):
        ranges = ", ".join(f"{p.start}-{p.end}" for p in pools) or "none"
        raise exceptions.BadRequest(
            f"IP address {ip} is not in an allocation pool of subnet {subnet_id} ({cidr}); pools: {ranges}."
        )
    return ip


# ----- MACs and bridges ------------------------------------------------------------------------------------------


def parse_mac(mac: object) -> str:
    """A MAC address in lower-case colon form; ``BadRequest`` for anything else or a multicast address."""
    if not isinstance(mac, str):
        raise _bad("mac_address", mac, "is not a MAC address string")
    parts = mac.replace("-", ":").lower().split(":")
    if len(parts) != 6 or not all(len(p) == 2 and all(c in "0123456789abcdef" for c in p) for p in parts):
        raise _bad("mac_address", mac, "is not a valid MAC address")
    if int(parts[0], 16) & 1:
        raise _bad("mac_address", mac, "is a multicast address")
    if parts == ["00"] * 6:
        raise _bad("mac_address", mac, "is the all-zero address")
    return ":".join(parts)


def random_mac(base_mac: str, rng: random.Random | None = None) -> str:
    """``base_mac``'s first three octets followed by three random ones (Neutron's ``fa:16:3e`` by default)."""
    prefix = parse_mac(base_mac).split(":")[:3]
    r = rng or random
    return ":".join([*prefix, *(f"{r.randrange(256):02x}" for _ in range(3))])


def bridge_name(prefix: str, network_id: str) -> str:
    """The Linux bridge of a network: ``prefix`` + the first 11 characters of its id (``brqXXXXXXXX-XX``).

    The id part shrinks if a long prefix would push the name past IFNAMSIZ-1 characters.
    """
    room = IFNAMSIZ - 1 - len(prefix)
    if room < 6:
        raise ValueError(f"bridge_prefix {prefix!r} leaves too little room for the network id in a 15-character name")
    return prefix + network_id[: min(11, room)]


# ----- allocation against the database ---------------------------------------------------------------------------


# The lowest free addresses of one pool, computed by PostgreSQL from the used ones: the gaps between consecutive
# used (or excluded) addresses, bounded by the pool, walked in order. One index range scan, whatever the pool size.
_FREE = """
taken AS (
    SELECT ip FROM (
        SELECT ip_address AS ip FROM ip_allocations WHERE subnet_id = $1 AND ip_address BETWEEN $2 AND $3
        UNION SELECT unnest($4::inet[])
    ) u WHERE ip BETWEEN $2 AND $3
), bounds AS (
    SELECT $2::inet - 1 AS ip UNION ALL SELECT ip FROM taken UNION ALL SELECT $3::inet + 1
), gaps AS (
    SELECT ip AS before, lead(ip) OVER (ORDER BY ip) AS after FROM bounds
), free AS (
    SELECT f.before + 1 + g AS ip
    FROM (SELECT before, after FROM gaps WHERE after - before > 1 ORDER BY before LIMIT $5) f,
         generate_series(0::bigint, LEAST(f.after - f.before - 2, $5 - 1)) AS g
    ORDER BY f.before, g LIMIT $5
)"""
_LOWEST_FREE = f"WITH {_FREE} SELECT host(ip) AS ip FROM free"

# Concurrent allocators see the same lowest free addresses. Each takes the first candidate nobody else is
# inserting right now (a transaction-level advisory try-lock per (subnet, address): never waits), so they spread
# over the candidates instead of queueing on one uncommitted row. The two-key lock space is Stratus IPAM's alone.
# ``free`` counts the candidates: 0 means the pool is full, more means they were all being taken (look again).
_IPAM_LOCK_CLASS = 0x1BA4


def _claim(port: str, source: str = "free") -> str:
    """The CTE ``claimed``: the first candidate of ``free`` nobody else is taking, for port ``port`` (an SQL
    expression over ``source``). Parameters after ``_FREE``'s: $6 the network, $7 the lock class."""
    return f"""claimed AS (
    INSERT INTO ip_allocations (subnet_id, ip_address, port_id, network_id)
    SELECT $1, free.ip, {port}, $6 FROM {source} WHERE pg_try_advisory_xact_lock($7, hashtext($1 || host(free.ip)))
    LIMIT 1
    ON CONFLICT (subnet_id, ip_address) DO NOTHING
    RETURNING host(ip_address) AS ip
)"""


# $8: the port.
_ALLOCATE_LOWEST = f"""
WITH {_FREE}, {_claim("$8")}
SELECT (SELECT ip FROM claimed) AS ip, (SELECT count(*) FROM free) AS free
"""


def allocation_with_port(insert_port: str) -> str:
    """``_ALLOCATE_LOWEST`` for a port made by the same statement: ``insert_port`` inserts one row into ``ports``
    (``RETURNING *``), its parameters numbered from $8; the address goes to the port it returns, so a port it
    does not make (its MAC was taken) gets none. Parameters $1..$7 are ``first_look``'s. Returns the port's
    columns plus ``allocated_ip``: the address, or NULL when the first look found none to take (then
    ``allocate_ip`` does the rest)."""
    return f"""
WITH port AS ({insert_port}), {_FREE}, {_claim("port.id", "free, port")}
SELECT port.*, (SELECT ip FROM claimed) AS allocated_ip FROM port"""


def first_look(subnet: Mapping[str, Any]) -> tuple[Any, ...] | None:
    """The parameters $1..$7 of ``allocation_with_port`` for where ``allocate_ip`` looks first in ``subnet``
    (its first pool, or that pool's first window); None when the subnet has no pool."""
    _, gateway, pools = subnet_facts(subnet)
    if not pools:
        return None
    start, end = _search_ranges(pools[0])[0]
    excluded = [gateway] if gateway is not None else []
    return subnet["id"], start, end, excluded, CANDIDATE_BATCH, subnet["network_id"], _IPAM_LOCK_CLASS


async def lowest_free(
    conn: asyncpg.Connection,
    subnet_id: str,
    pools: Sequence[Pool],
    limit: int,
    *,
    exclude: Sequence[IPv4Address] = (),
) -> list[IPv4Address]:
    """The ``limit`` lowest addresses of ``pools`` neither allocated in ``subnet_id`` nor in ``exclude``: what
    PostgreSQL finds them from the used rows (an index range scan), so the used set never leaves the database.
    ``allocate_ip`` takes the first of them in the same statement."""
    out: list[IPv4Address] = []
    for pool in sorted(pools):
        rows = await conn.fetch(_LOWEST_FREE, subnet_id, pool.start, pool.end, list(exclude), limit - len(out))
        out.extend(IPv4Address(r["ip"]) for r in rows)
        if len(out) >= limit:
            break
    return out


async def _try_insert(conn: asyncpg.Connection, subnet_id: str, ip: IPv4Address, port_id: str, network_id: str) -> bool:
    # ON CONFLICT DO NOTHING is the unique-violation retry without aborting the caller's transaction. If another
    # transaction holds the same key uncommitted, this waits for it and then reports the conflict (or succeeds
    # if that one rolled back): either way the answer is final.
    got = await conn.fetchval(
        "INSERT INTO ip_allocations (subnet_id, ip_address, port_id, network_id) VALUES ($1, $2, $3, $4)"
        " ON CONFLICT (subnet_id, ip_address) DO NOTHING RETURNING true",
        subnet_id,
        ip,
        port_id,
        network_id,
    )
    return bool(got)


def _search_ranges(pool: Pool) -> list[tuple[IPv4Address, IPv4Address]]:
    """Where ``allocate_ip`` looks in ``pool``, in order: a small pool whole; a big one in ``SEARCH_TRIES``
    windows of ``SEARCH_WINDOW`` addresses at random offsets, then whole (when they were all full)."""
    if pool.size <= SEARCH_WINDOW:
        return [(pool.start, pool.end)]
    offsets = (random.randrange(pool.size - SEARCH_WINDOW + 1) for _ in range(SEARCH_TRIES))
    return [*((pool.start + o, pool.start + o + SEARCH_WINDOW - 1) for o in offsets), (pool.start, pool.end)]


def subnet_facts(subnet: Mapping[str, Any]) -> tuple[IPv4Network, IPv4Address | None, list[Pool]]:
    """(cidr, gateway, pools) of a ``subnets`` row."""
    cidr = ipaddress.ip_network(str(subnet["cidr"]))
    gw = subnet["gateway_ip"]
    gateway = ipaddress.ip_address(str(gw).split("/")[0]) if gw is not None else None
    return cidr, gateway, pools_from_json(subnet["allocation_pools"])  # type: ignore[return-value]


async def allocate_ip(
    conn: asyncpg.Connection,
    subnet: Mapping[str, Any],
    port_id: str,
    *,
    ip_address: str | None = None,
) -> IPv4Address:
    """Allocate one address of ``subnet`` (a ``subnets`` row) to ``port_id``; returns it.

    With ``ip_address``: that address, validated (in the subnet, in a pool, not the gateway); ``Conflict`` if it
    is taken. Without: the lowest free address of the pools, or in a pool of more than ``SEARCH_WINDOW``
    addresses the lowest free one of a window of that many at a random point of it (up to ``SEARCH_TRIES``
    windows, then the whole pool), so the look at the used set costs about the same in a /16 as in a /24 until
    the pool is nearly full, and concurrent allocators spread out; ``IpAddressExhausted`` (409) naming the
    subnet when none is left. Safe under any concurrency; the caller's transaction owns the result (a rollback
    frees it).
    """
    cidr, gateway, pools = subnet_facts(subnet)
    sid, nid = subnet["id"], subnet["network_id"]
    if ip_address is not None:
        ip = check_requested_ip(ip_address, subnet_id=sid, cidr=cidr, gateway_ip=gateway, pools=pools)
        if not await _try_insert(conn, sid, ip, port_id, nid):
            raise exceptions.Conflict(
                f"Unable to complete operation for network {nid}. The IP address {ip} is in use (subnet {sid}, {cidr})."
            )
        return ip
    excluded = [gateway] if gateway is not None else []
    batch = CANDIDATE_BATCH
    while True:
        any_free = False
        for pool in sorted(pools):
            for start, end in _search_ranges(pool):
                row = await conn.fetchrow(
                    _ALLOCATE_LOWEST, sid, start, end, excluded, batch, nid, _IPAM_LOCK_CLASS, port_id
                )
                if row["ip"] is not None:
                    return IPv4Address(row["ip"])
                if row["free"] > 0:  # free addresses, all being taken right now: the next round looks further
                    any_free = True
                    break
        if not any_free:
            raise exceptions.IpAddressExhausted(
                f"No more IP addresses available on subnet {sid} ({cidr}) of network {nid}: "
                f"all {pool_size(pools)} addresses of its allocation pools are in use."
            )
        # Every candidate is being allocated by a concurrent transaction (or was committed since we looked):
        # look again, further.
        batch = min(batch * 2, 1024)
