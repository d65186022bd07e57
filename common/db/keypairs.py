"""SSH key pairs, owned by a user (Nova's model: names are unique per user, not per project)."""

from __future__ import annotations

import uuid

import asyncpg

__all__ = ["create", "delete", "get", "list_"]


async def create(
    conn: asyncpg.Connection,
    *,
    user_id: str,
    project_id: str,
    name: str,
    public_key: str,
    fingerprint: str,
    key_type: str = "ssh",
) -> asyncpg.Record:
    """Raises ``asyncpg.UniqueViolationError`` when the user already has a key pair of that name."""
    return await conn.fetchrow(
        "INSERT INTO keypairs (id, user_id, project_id, name, public_key, fingerprint, type)"
        " VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING *",
        str(uuid.uuid4()),
        user_id,
        project_id,
        name,
        public_key,
        fingerprint,
        key_type,
    )


async def get(conn: asyncpg.Connection, user_id: str, name: str) -> asyncpg.Record | None:
    return await conn.fetchrow("SELECT * FROM keypairs WHERE user_id = $1 AND name = $2", user_id, name)


async def list_(
    conn: asyncpg.Connection, user_id: str, *, limit: int | None = None, marker: str | None = None
) -> list[asyncpg.Record]:
    """Ordered by name; ``marker`` is a key pair name."""
    args: list = [user_id]
    q = "SELECT * FROM keypairs WHERE user_id = $1"
    if marker is not None:
        args.append(marker)
        q += f" AND name > ${len(args)}"
    q += " ORDER BY name"
    if limit is not None:
        args.append(limit)
        q += f" LIMIT ${len(args)}"
    return await conn.fetch(q, *args)


async def delete(conn: asyncpg.Connection, user_id: str, name: str) -> bool:
    return await conn.execute("DELETE FROM keypairs WHERE user_id = $1 AND name = $2", user_id, name) != "DELETE 0"
