"""Flavors: the sizes servers are booted with. Instances keep a snapshot, so deleting a flavor is harmless."""

from __future__ import annotations

import uuid
from typing import Any

import asyncpg

__all__ = ["create", "delete", "ensure", "get", "get_by_name", "list_", "set_extra_specs", "unset_extra_spec"]


async def create(
    conn: asyncpg.Connection,
    *,
    name: str,
    vcpus: int,
    ram_mb: int,
    disk_gb: int,
    flavor_id: str | None = None,
    ephemeral_gb: int = 0,
    swap_mb: int = 0,
    rxtx_factor: float = 1.0,
    is_public: bool = True,
    description: str | None = None,
    extra_specs: dict[str, str] | None = None,
) -> asyncpg.Record:
    """Raises ``asyncpg.UniqueViolationError`` when the id or the name is taken."""
    return await conn.fetchrow(
        "INSERT INTO flavors (id, name, vcpus, ram_mb, disk_gb, ephemeral_gb, swap_mb, rxtx_factor, is_public,"
        " description, extra_specs) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) RETURNING *",
        flavor_id or str(uuid.uuid4()),
        name,
        vcpus,
        ram_mb,
        disk_gb,
        ephemeral_gb,
        swap_mb,
        rxtx_factor,
        is_public,
        description,
        extra_specs or {},
    )


async def ensure(conn: asyncpg.Connection, *, flavor_id: str, name: str, **values: Any) -> asyncpg.Record:
    """Create the flavor unless one with this id or name exists (then return that one, unchanged)."""
    row = await conn.fetchrow("SELECT * FROM flavors WHERE id = $1 OR name = $2 LIMIT 1", flavor_id, name)
    if row is not None:
        return row
    return await create(conn, flavor_id=flavor_id, name=name, **values)


async def get(conn: asyncpg.Connection, flavor_id: str) -> asyncpg.Record | None:
    return await conn.fetchrow("SELECT * FROM flavors WHERE id = $1", flavor_id)


async def get_by_name(conn: asyncpg.Connection, name: str) -> asyncpg.Record | None:
    return await conn.fetchrow("SELECT * FROM flavors WHERE name = $1", name)


async def list_(
    conn: asyncpg.Connection,
    *,
    is_public: bool | None = True,
    min_ram: int | None = None,
    min_disk: int | None = None,
    limit: int | None = None,
    marker: str | None = None,
) -> list[asyncpg.Record]:
    """Ordered like Nova's default (by ``flavorid``); ``marker`` is a flavor id, ``is_public=None`` means all."""
    where, args = ["true"], []
    if is_public is not None:
        args.append(is_public)
        where.append(f"is_public = ${len(args)}")
    if min_ram is not None:
        args.append(min_ram)
        where.append(f"ram_mb >= ${len(args)}")
    if min_disk is not None:
        args.append(min_disk)
        where.append(f"disk_gb >= ${len(args)}")
    if marker is not None:
        args.append(marker)
        where.append(f"id > ${len(args)}")
    q = f"SELECT * FROM flavors WHERE {' AND '.join(where)} ORDER BY id"
    if limit is not None:
        args.append(limit)
        q += f" LIMIT ${len(args)}"
    return await conn.fetch(q, *args)


async def delete(conn: asyncpg.Connection, flavor_id: str) -> bool:
    return await conn.execute("DELETE FROM flavors WHERE id = $1", flavor_id) != "DELETE 0"


async def set_extra_specs(conn: asyncpg.Connection, flavor_id: str, specs: dict[str, str]) -> asyncpg.Record | None:
    """Merge ``specs`` into the flavor's extra specs; the updated row, or None if there is no such flavor."""
    return await conn.fetchrow(
        "UPDATE flavors SET extra_specs = extra_specs || $2::jsonb, updated_at = now() WHERE id = $1 RETURNING *",
        flavor_id,
        specs,
    )


async def unset_extra_spec(conn: asyncpg.Connection, flavor_id: str, key: str) -> bool:
    """False when the flavor or the key does not exist."""
    row = await conn.fetchrow(
        "UPDATE flavors SET extra_specs = extra_specs - $2, updated_at = now()"
        " WHERE id = $1 AND extra_specs ? $2 RETURNING id",
        flavor_id,
        key,
    )
    return row is not None
