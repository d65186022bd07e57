"""Images: metadata plus a ``location`` URL computes download from. Deleted images are kept (soft delete)."""

from __future__ import annotations

import uuid
from typing import Any

import asyncpg

__all__ = ["UPDATABLE", "create", "get", "get_by_name", "list_", "mark_deleted", "set_status", "update"]

UPDATABLE = frozenset(
    {
        "name", "status", "visibility", "disk_format", "container_format", "size", "virtual_size", "checksum",
        "os_hash_algo", "os_hash_value", "min_disk", "min_ram", "protected", "location", "properties", "tags",
    }
)  # fmt: skip


async def create(conn: asyncpg.Connection, values: dict[str, Any]) -> asyncpg.Record:
    """Insert an image; ``values`` holds column names (``id`` defaults to a new uuid)."""
    values = {"id": str(uuid.uuid4()), **values}
    unknown = set(values) - UPDATABLE - {"id", "project_id"}
    if unknown:
        raise ValueError(f"not image columns: {sorted(unknown)}")
    cols = list(values)
    placeholders = ", ".join(f"${i}" for i in range(1, len(cols) + 1))
    return await conn.fetchrow(
        f"INSERT INTO images ({', '.join(cols)}) VALUES ({placeholders}) RETURNING *", *[values[c] for c in cols]
    )


async def get(conn: asyncpg.Connection, image_id: str) -> asyncpg.Record | None:
    return await conn.fetchrow("SELECT * FROM images WHERE id = $1 AND deleted_at IS NULL", image_id)


async def get_by_name(conn: asyncpg.Connection, name: str, *, project_id: str | None = None) -> asyncpg.Record | None:
    """The newest image of that name the project can see (any project's when ``project_id`` is None)."""
    if project_id is None:
        return await conn.fetchrow(
            "SELECT * FROM images WHERE name = $1 AND deleted_at IS NULL ORDER BY created_at DESC LIMIT 1", name
        )
    return await conn.fetchrow(
        "SELECT * FROM images WHERE name = $1 AND deleted_at IS NULL"
        " AND (visibility = 'public' OR project_id = $2) ORDER BY created_at DESC LIMIT 1",
        name,
        project_id,
    )


async def list_(
    conn: asyncpg.Connection,
    *,
    project_id: str | None,
    visibility: str | None = None,
    name: str | None = None,
    status: str | None = None,
    owner: str | None = None,
    limit: int | None = None,
    marker: str | None = None,
) -> list[asyncpg.Record]:
    """Images visible to ``project_id`` (None: every image, for admins), newest first.

    Like Glance, a listing without a ``visibility`` filter leaves out community images of other projects.
    """
    where, args = ["deleted_at IS NULL"], []

    def arg(v: Any) -> str:
        args.append(v)
        return f"${len(args)}"

    if project_id is not None:
        # Only a parameter the query uses may be bound: PostgreSQL cannot type one it never sees.
        if visibility == "community":
            where.append("visibility = 'community'")
        else:
            where.append(f"(visibility = 'public' OR project_id = {arg(project_id)})")
    if visibility is not None and visibility != "all":
        where.append(f"visibility = {arg(visibility)}")
    elif visibility is None and project_id is not None:
        where.append(f"(visibility <> 'community' OR project_id = {arg(project_id)})")
    if name is not None:
        where.append(f"name = {arg(name)}")
    if status is not None:
        where.append(f"status = {arg(status)}")
    if owner is not None:
        where.append(f"project_id = {arg(owner)}")
    if marker is not None:
        where.append(f"(created_at, id) < (SELECT created_at, id FROM images WHERE id = {arg(marker)})")
    q = f"SELECT * FROM images WHERE {' AND '.join(where)} ORDER BY created_at DESC, id DESC"
    if limit is not None:
        q += f" LIMIT {arg(limit)}"
    return await conn.fetch(q, *args)


async def update(
    conn: asyncpg.Connection, image_id: str, values: dict[str, Any], *, expected_status: str | None = None
) -> asyncpg.Record | None:
    """Guarded update: the new row, or None when the image is gone or not in ``expected_status``."""
    unknown = set(values) - UPDATABLE
    if unknown:
        raise ValueError(f"not updatable: {sorted(unknown)}")
    sets, args = [], [image_id]
    for col, val in values.items():
        args.append(val)
        sets.append(f"{col} = ${len(args)}")
    where = "id = $1 AND deleted_at IS NULL"
    if expected_status is not None:
        args.append(expected_status)
        where += f" AND status = ${len(args)}"
    return await conn.fetchrow(
        f"UPDATE images SET {', '.join(sets)}, updated_at = now() WHERE {where} RETURNING *", *args
    )


async def set_status(
    conn: asyncpg.Connection, image_id: str, status: str, *, expected_status: str | None = None
) -> asyncpg.Record | None:
    return await update(conn, image_id, {"status": status}, expected_status=expected_status)


async def mark_deleted(conn: asyncpg.Connection, image_id: str) -> asyncpg.Record | None:
    return await conn.fetchrow(
        "UPDATE images SET status = 'deleted', deleted_at = now(), updated_at = now()"
        " WHERE id = $1 AND deleted_at IS NULL RETURNING *",
        image_id,
    )
