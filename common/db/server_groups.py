"""Server groups and their members. The anti-affinity/affinity guard runs inside the claim transaction, so two
schedulers placing members of one group at once cannot both break the policy."""

from __future__ import annotations

import uuid
from typing import Any

import asyncpg

__all__ = [
    "POLICIES",
    "add_member",
    "check_placement",
    "create",
    "delete",
    "get",
    "list_",
    "member_hosts",
    "members",
]

POLICIES = ("affinity", "anti-affinity", "soft-affinity", "soft-anti-affinity")


async def create(
    conn: asyncpg.Connection, *, project_id: str, user_id: str, name: str, policy: str, rules: dict[str, Any]
) -> asyncpg.Record:
    return await conn.fetchrow(
        "INSERT INTO server_groups (id, project_id, user_id, name, policy, rules) VALUES ($1, $2, $3, $4, $5, $6)"
        " RETURNING *",
        str(uuid.uuid4()), project_id, user_id, name, policy, rules,
    )  # fmt: skip


async def get(conn: asyncpg.Connection, group_id: str) -> asyncpg.Record | None:
    return await conn.fetchrow("SELECT * FROM server_groups WHERE id = $1 AND deleted_at IS NULL", group_id)


async def list_(conn: asyncpg.Connection, project_id: str | None) -> list[asyncpg.Record]:
    if project_id is None:
        return await conn.fetch("SELECT * FROM server_groups WHERE deleted_at IS NULL ORDER BY created_at")
    return await conn.fetch(
        "SELECT * FROM server_groups WHERE deleted_at IS NULL AND project_id = $1 ORDER BY created_at", project_id
    )


async def delete(conn: asyncpg.Connection, group_id: str) -> bool:
    done = await conn.execute(
        "UPDATE server_groups SET deleted_at = now(), updated_at = now() WHERE id = $1 AND deleted_at IS NULL",
        group_id,
    )
    return done.endswith(" 1")


async def add_member(conn: asyncpg.Connection, group_id: str, instance_id: str) -> None:
    await conn.execute(
        "INSERT INTO server_group_members (group_id, instance_id) VALUES ($1, $2) ON CONFLICT DO NOTHING",
        group_id,
        instance_id,
    )


async def members(conn: asyncpg.Connection, group_ids: list[str]) -> dict[str, list[str]]:
    """Live (not deleted) members per group."""
    rows = await conn.fetch(
        "SELECT m.group_id, m.instance_id FROM server_group_members m JOIN instances i ON i.id = m.instance_id"
        " WHERE m.group_id = ANY($1) AND i.deleted_at IS NULL ORDER BY m.created_at",
        group_ids,
    )
    out: dict[str, list[str]] = {g: [] for g in group_ids}
    for r in rows:
        out[r["group_id"]].append(r["instance_id"])
    return out


async def member_hosts(conn: asyncpg.Connection, group_id: str, exclude_instance: str) -> dict[str, int]:
    """Hosts holding a claimed member of the group (other than ``exclude_instance``), with member counts."""
    rows = await conn.fetch(
        "SELECT n.host, count(*) AS n FROM server_group_members m"
        " JOIN allocations a ON a.instance_id = m.instance_id"
        " JOIN compute_nodes n ON n.id = a.compute_node_id"
        " WHERE m.group_id = $1 AND m.instance_id <> $2 GROUP BY n.host",
        group_id,
        exclude_instance,
    )
    return {r["host"]: r["n"] for r in rows}


async def check_placement(conn: asyncpg.Connection, group_id: str, instance_id: str, host: str) -> str | None:
    """Inside a claim transaction: None when placing ``instance_id`` on ``host`` keeps the group's hard policy,
    else why not. Locks the group row, so claims of one group's members are serialised (other claims are not).
    """
    group = await conn.fetchrow("SELECT policy, rules, name FROM server_groups WHERE id = $1 FOR UPDATE", group_id)
    if group is None or group["policy"] not in ("affinity", "anti-affinity"):
        return None
    hosts = await member_hosts(conn, group_id, instance_id)
    if group["policy"] == "affinity":
        others = set(hosts) - {host}
        return f"group {group['name']} (affinity) already lives on {sorted(others)[0]}" if others else None
    rules = group["rules"] or {}
    limit = int(rules.get("max_server_per_host", 1))
    if hosts.get(host, 0) >= limit:
        return f"host {host} already holds {hosts[host]} member(s) of group {group['name']} (anti-affinity)"
    return None
