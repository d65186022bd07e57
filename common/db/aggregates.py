"""Host aggregates: named host sets with metadata (matched against flavor extra specs, allocation-ratio
overrides that the claim statement honours) and an optional availability zone for their hosts."""

from __future__ import annotations

import uuid
from typing import Any

import asyncpg

__all__ = [
    "AGGREGATE_ZONE",
    "MAX_RATIO",
    "RATIO_KEYS",
    "add_host",
    "create",
    "delete",
    "get",
    "list_",
    "parse_ratio",
    "remove_host",
    "set_metadata",
    "update",
]

# SQL: the zone an aggregate gives compute node ``n`` (NULL when none does); the oldest aggregate wins.
AGGREGATE_ZONE = (
    "(SELECT a.availability_zone FROM aggregate_hosts h JOIN aggregates a ON a.id = h.aggregate_id"
    " WHERE h.host = n.host AND a.deleted_at IS NULL AND a.availability_zone IS NOT NULL ORDER BY a.id LIMIT 1)"
)

# Metadata keys that override a member host's allocation ratio; with several aggregates the lowest wins.
RATIO_KEYS = ("cpu_allocation_ratio", "ram_allocation_ratio", "disk_allocation_ratio")
# The largest ratio an aggregate may set: far beyond any sane overcommit, and well inside the ``real`` the claim
# statement casts it to (a value beyond float4 would make every claim on the aggregate's hosts fail).
MAX_RATIO = 1000.0


def parse_ratio(value: object) -> float | None:
    """An allocation-ratio override as a float, or None unless it is a finite number in (0, ``MAX_RATIO``]."""
    try:
        ratio = float(str(value))
    except ValueError:
        return None
    return ratio if 0 < ratio <= MAX_RATIO else None


_SELECT = """
    SELECT a.*, COALESCE(array_agg(h.host ORDER BY h.host) FILTER (WHERE h.host IS NOT NULL), '{{}}') AS hosts
    FROM aggregates a LEFT JOIN aggregate_hosts h ON h.aggregate_id = a.id
    WHERE a.deleted_at IS NULL {where} GROUP BY a.id ORDER BY a.id
"""


async def list_(conn: asyncpg.Connection) -> list[asyncpg.Record]:
    return await conn.fetch(_SELECT.format(where=""))


async def get(conn: asyncpg.Connection, aggregate_id: int) -> asyncpg.Record | None:
    return await conn.fetchrow(_SELECT.format(where="AND a.id = $1"), aggregate_id)


async def create(conn: asyncpg.Connection, *, name: str, availability_zone: str | None) -> asyncpg.Record | None:
    """The new aggregate, or None when the name is taken."""
    agg_id = await conn.fetchval(
        "INSERT INTO aggregates (uuid, name, availability_zone, metadata) VALUES ($1, $2, $3, $4)"
        " ON CONFLICT (name) WHERE deleted_at IS NULL DO NOTHING RETURNING id",
        str(uuid.uuid4()),
        name,
        availability_zone,
        {"availability_zone": availability_zone} if availability_zone else {},
    )
    return None if agg_id is None else await get(conn, agg_id)


async def update(conn: asyncpg.Connection, aggregate_id: int, values: dict[str, Any]) -> asyncpg.Record | None:
    if "name" in values:
        await conn.execute("UPDATE aggregates SET name = $2, updated_at = now() WHERE id = $1", aggregate_id,
                           values["name"])  # fmt: skip
    if "availability_zone" in values:
        az = values["availability_zone"]
        await conn.execute(
            "UPDATE aggregates SET availability_zone = $2, updated_at = now(), metadata = CASE WHEN $2::text IS NULL"
            " THEN metadata - 'availability_zone' ELSE metadata || jsonb_build_object('availability_zone', $2::text)"
            " END WHERE id = $1",
            aggregate_id,
            az,
        )
    return await get(conn, aggregate_id)


async def delete(conn: asyncpg.Connection, aggregate_id: int) -> None:
    await conn.execute("UPDATE aggregates SET deleted_at = now(), name = name || '-deleted-' || id WHERE id = $1",
                       aggregate_id)  # fmt: skip


async def add_host(conn: asyncpg.Connection, aggregate_id: int, host: str) -> bool:
    done = await conn.execute(
        "INSERT INTO aggregate_hosts (aggregate_id, host) VALUES ($1, $2) ON CONFLICT DO NOTHING", aggregate_id, host
    )
    return done.endswith(" 1")


async def remove_host(conn: asyncpg.Connection, aggregate_id: int, host: str) -> bool:
    done = await conn.execute("DELETE FROM aggregate_hosts WHERE aggregate_id = $1 AND host = $2", aggregate_id, host)
    return done.endswith(" 1")


async def set_metadata(conn: asyncpg.Connection, aggregate_id: int, metadata: dict[str, str | None]) -> None:
    """Nova's set_metadata: a None value deletes the key. ``availability_zone`` also sets the column."""
    sets = {k: v for k, v in metadata.items() if v is not None}
    drops = [k for k, v in metadata.items() if v is None]
    await conn.execute(
        "UPDATE aggregates SET metadata = (metadata - $3::text[]) || $2::jsonb, updated_at = now() WHERE id = $1",
        aggregate_id,
        sets,
        drops,
    )
    if "availability_zone" in metadata:
        await conn.execute(
            "UPDATE aggregates SET availability_zone = $2 WHERE id = $1", aggregate_id, metadata["availability_zone"]
        )
