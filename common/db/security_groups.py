"""Security groups, their rules, and port membership (plain ``async def f(conn, ...)`` functions).

Every project has a 'default' group with a derived id (``default_group_id``), made on first use with Neutron's
default rules: all egress, and ingress from members of the same group. A port with no explicit membership is in
its project's default group. Deleting a group that ports are in is a ``Conflict`` naming them.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from typing import Any

import asyncpg

from common import exceptions

__all__ = [
    "create_group",
    "create_rule",
    "default_group_id",
    "delete_group",
    "delete_rule",
    "ensure_default",
    "get_group",
    "get_rule",
    "groups_of_ports",
    "list_groups",
    "list_rules",
    "members",
    "set_port_groups",
    "update_group",
]

# Both as the API derived them before groups had rows, so ids clients saw stay valid.
_SG_NAMESPACE = uuid.UUID("5e1b7c52-6a44-4b8e-9d0c-7f1e2a3b4c5d")
_RULE_NAMESPACE = uuid.UUID("0c3a4f2e-8d7b-4e61-9a5c-2b1d3e4f5a6b")
RULE_COLUMNS = ("direction", "ethertype", "protocol", "port_range_min", "port_range_max", "remote_ip_prefix",
                "remote_group_id", "description")  # fmt: skip


def default_group_id(project_id: str) -> str:
    return str(uuid.uuid5(_SG_NAMESPACE, f"default:{project_id}"))


async def ensure_default(conn: asyncpg.Connection, project_id: str) -> str:
    """Make ``project_id``'s default group (and its four rules) if missing; returns its id. Idempotent."""
    gid = default_group_id(project_id)
    inserted = await conn.fetchval(
        "INSERT INTO security_groups (id, project_id, name, description, created_at, updated_at) "
        "VALUES ($1, $2, 'default', 'Default security group', '2024-01-01', '2024-01-01') "
        "ON CONFLICT (id) DO NOTHING RETURNING id",
        gid,
        project_id,
    )
    if inserted is not None:
        for direction in ("egress", "ingress"):
            for ethertype in ("IPv4", "IPv6"):
                await conn.execute(
                    "INSERT INTO security_group_rules (id, security_group_id, project_id, direction, ethertype, "
                    "remote_group_id, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, '2024-01-01', "
                    "'2024-01-01') ON CONFLICT DO NOTHING",
                    str(uuid.uuid5(_RULE_NAMESPACE, f"{gid}:{direction}:{ethertype}")),
                    gid,
                    project_id,
                    direction,
                    ethertype,
                    gid if direction == "ingress" else None,
                )
    return gid


async def list_groups(conn: asyncpg.Connection, project_ids: Sequence[str] | None) -> list[asyncpg.Record]:
    """Groups of ``project_ids`` (None: all), default groups made on the way for the projects named."""
    for p in project_ids or []:
        await ensure_default(conn, p)
    if project_ids is None:
        return await conn.fetch("SELECT * FROM security_groups ORDER BY created_at, id")
    return await conn.fetch(
        "SELECT * FROM security_groups WHERE project_id = ANY($1::text[]) ORDER BY created_at, id", list(project_ids)
    )


async def get_group(conn: asyncpg.Connection, group_id: str) -> asyncpg.Record | None:
    return await conn.fetchrow("SELECT * FROM security_groups WHERE id = $1", group_id)


async def create_group(conn: asyncpg.Connection, project_id: str, name: str, description: str) -> asyncpg.Record:
    """A new group with Neutron's two egress rules (IPv4 and IPv6 to anywhere)."""
    await ensure_default(conn, project_id)
    row = await conn.fetchrow(
        "INSERT INTO security_groups (id, project_id, name, description) VALUES ($1, $2, $3, $4) RETURNING *",
        str(uuid.uuid4()),
        project_id,
        name,
        description,
    )
    for ethertype in ("IPv4", "IPv6"):
        await conn.execute(
            "INSERT INTO security_group_rules (id, security_group_id, project_id, direction, ethertype) "
            "VALUES ($1, $2, $3, 'egress', $4)",
            str(uuid.uuid4()),
            row["id"],
            project_id,
            ethertype,
        )
    return row


async def update_group(conn: asyncpg.Connection, group_id: str, values: Mapping[str, Any]) -> asyncpg.Record:
    sets = ", ".join(f"{k} = ${i + 2}" for i, k in enumerate(values))
    extra = f"{sets}, " if sets else ""
    return await conn.fetchrow(
        f"UPDATE security_groups SET {extra}revision_number = revision_number + 1, updated_at = now() "
        "WHERE id = $1 RETURNING *",
        group_id,
        *values.values(),
    )


async def delete_group(conn: asyncpg.Connection, group_id: str) -> None:
    """``Conflict`` when ports are in the group (or it is a default group that ports are implicitly in)."""
    group = await conn.fetchrow("SELECT * FROM security_groups WHERE id = $1 FOR UPDATE", group_id)
    if group is None:
        raise exceptions.NotFound(f"Security group {group_id} does not exist")
    if group["id"] == default_group_id(group["project_id"]):
        raise exceptions.Conflict(f"Security group {group_id} is the default group of project "
                                  f"{group['project_id']} and cannot be deleted.")  # fmt: skip
    rows = await conn.fetch(
        "SELECT port_id FROM port_security_groups WHERE security_group_id = $1 ORDER BY port_id", group_id
    )
    ports = [r["port_id"] for r in rows]
    if ports:
        raise exceptions.Conflict(
            f"Security Group {group_id} in use: {len(ports)} port(s) are in it: {', '.join(ports[:5])}"
            + (" ..." if len(ports) > 5 else "")
        )
    await conn.execute("DELETE FROM security_groups WHERE id = $1", group_id)


async def list_rules(conn: asyncpg.Connection, group_ids: Sequence[str] | None) -> list[asyncpg.Record]:
    if group_ids is None:
        return await conn.fetch("SELECT * FROM security_group_rules ORDER BY created_at, id")
    return await conn.fetch(
        "SELECT * FROM security_group_rules WHERE security_group_id = ANY($1::text[]) ORDER BY created_at, id",
        list(group_ids),
    )


async def get_rule(conn: asyncpg.Connection, rule_id: str) -> asyncpg.Record | None:
    return await conn.fetchrow("SELECT * FROM security_group_rules WHERE id = $1", rule_id)


async def create_rule(conn: asyncpg.Connection, group: Mapping[str, Any], rule: Mapping[str, Any]) -> asyncpg.Record:
    """Insert a validated rule; ``Conflict`` when the same rule exists."""
    cols = {k: rule.get(k) for k in RULE_COLUMNS}
    cols["description"] = cols["description"] or ""
    try:
        async with conn.transaction():
            return await conn.fetchrow(
                "INSERT INTO security_group_rules (id, security_group_id, project_id, "
                + ", ".join(cols)
                + ") VALUES ($1, $2, $3, "
                + ", ".join(f"${i + 4}" for i in range(len(cols)))
                + ") RETURNING *",
                str(uuid.uuid4()),
                group["id"],
                group["project_id"],
                *cols.values(),
            )
    except asyncpg.UniqueViolationError as e:
        raise exceptions.Conflict(f"Security group rule already exists in group {group['id']}.") from e
    except asyncpg.ForeignKeyViolationError as e:
        raise exceptions.NotFound(f"Security group {rule.get('remote_group_id')} does not exist") from e


async def delete_rule(conn: asyncpg.Connection, rule_id: str) -> bool:
    return await conn.fetchval("DELETE FROM security_group_rules WHERE id = $1 RETURNING id", rule_id) is not None


async def groups_of_ports(conn: asyncpg.Connection, ports: Sequence[Mapping[str, Any]]) -> dict[str, list[str]]:
    """``{port_id: [group ids]}``; a port without explicit groups is in its project's default group."""
    rows = await conn.fetch(
        "SELECT port_id, security_group_id FROM port_security_groups WHERE port_id = ANY($1::text[]) "
        "ORDER BY port_id, security_group_id",
        [p["id"] for p in ports],
    )
    out: dict[str, list[str]] = {}
    for r in rows:
        out.setdefault(r["port_id"], []).append(r["security_group_id"])
    return {p["id"]: out.get(p["id"]) or [default_group_id(p["project_id"])] for p in ports}


async def set_port_groups(conn: asyncpg.Connection, port: Mapping[str, Any], group_ids: Sequence[str]) -> None:
    """Put ``port`` in exactly ``group_ids`` (names 'default' allowed); ``NotFound`` for a group it cannot use."""
    resolved = []
    for gid in group_ids:
        if gid == "default":
            gid = await ensure_default(conn, port["project_id"])
        elif gid == default_group_id(port["project_id"]):
            await ensure_default(conn, port["project_id"])
        row = await get_group(conn, gid)
        if row is None or row["project_id"] != port["project_id"]:
            raise exceptions.NotFound(f"Security group {gid} does not exist")
        resolved.append(gid)
    await conn.execute("DELETE FROM port_security_groups WHERE port_id = $1", port["id"])
    for gid in dict.fromkeys(resolved):
        await conn.execute(
            "INSERT INTO port_security_groups (port_id, security_group_id) VALUES ($1, $2)", port["id"], gid
        )
    await conn.execute("UPDATE ports SET updated_at = now() WHERE id = $1", port["id"])


async def members(conn: asyncpg.Connection, group_ids: Sequence[str]) -> dict[str, list[str]]:
    """``{group_id: [IPv4 addresses of compute ports in it]}`` (explicit members, and implicit default ones)."""
    out: dict[str, list[str]] = {g: [] for g in group_ids}
    rows = await conn.fetch(
        "SELECT psg.security_group_id AS gid, host(a.ip_address) AS ip FROM port_security_groups psg "
        "JOIN ports p ON p.id = psg.port_id JOIN ip_allocations a ON a.port_id = p.id "
        "WHERE psg.security_group_id = ANY($1::text[]) AND p.device_owner LIKE 'compute:%' "
        "AND family(a.ip_address) = 4 ORDER BY a.ip_address",
        list(group_ids),
    )
    for r in rows:
        out[r["gid"]].append(r["ip"])
    defaults = {g: r["project_id"] for g in group_ids if (r := await get_group(conn, g)) is not None
                and g == default_group_id(r["project_id"])}  # fmt: skip
    for gid, project_id in defaults.items():
        rows = await conn.fetch(
            "SELECT host(a.ip_address) AS ip FROM ports p JOIN ip_allocations a ON a.port_id = p.id "
            "WHERE p.project_id = $1 AND p.device_owner LIKE 'compute:%' AND family(a.ip_address) = 4 "
            "AND NOT EXISTS (SELECT 1 FROM port_security_groups x WHERE x.port_id = p.id) ORDER BY a.ip_address",
            project_id,
        )
        out[gid] = sorted({*out[gid], *(r["ip"] for r in rows)})
    return out
