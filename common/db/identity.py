"""Projects, users, roles and role assignments; password hashing (scrypt, per-user salt).

There is one domain, ``default``: every project and user lives in it.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import uuid

import asyncpg

__all__ = [
    "DEFAULT_DOMAIN_ID",
    "DEFAULT_DOMAIN_NAME",
    "assign_role",
    "create_project",
    "create_role",
    "create_user",
    "get_project",
    "get_project_by_name",
    "get_role",
    "get_role_by_name",
    "get_user",
    "get_user_by_name",
    "hash_password",
    "list_assignments",
    "list_projects",
    "list_roles",
    "list_users",
    "live_revocations",
    "new_id",
    "projects_for_user",
    "revoke",
    "roles_for",
    "set_password",
    "unassign_role",
    "verify_password",
]

DEFAULT_DOMAIN_ID = "default"
DEFAULT_DOMAIN_NAME = "Default"

# scrypt cost: n=2**14, r=8, p=1 is ~16 MiB and ~50 ms here; the parameters travel in the hash so they may grow.
_N, _R, _P = 2**14, 8, 1


def new_id() -> str:
    """Keystone-style ids: 32 hex digits."""
    return uuid.uuid4().hex


def hash_password(password: str) -> str:
    """``scrypt$n$r$p$salt_hex$hash_hex``."""
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=_N, r=_R, p=_P, dklen=32)
    return f"scrypt${_N}${_R}${_P}${salt.hex()}${digest.hex()}"


def verify_password(password: str, stored: str) -> bool:
    """Constant-time check of ``password`` against a ``hash_password`` result; False for any malformed hash."""
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt":
            return False
        got = hashlib.scrypt(
            password.encode(), salt=bytes.fromhex(salt), n=int(n), r=int(r), p=int(p), dklen=len(digest) // 2
        )
    except ValueError:
        return False
    return hmac.compare_digest(got.hex(), digest)


# ----- projects -----------------------------------------------------------------------------------------------


async def create_project(
    conn: asyncpg.Connection, *, name: str, description: str = "", enabled: bool = True, project_id: str | None = None
) -> asyncpg.Record:
    """Raises ``asyncpg.UniqueViolationError`` when the name (or id) is taken."""
    return await conn.fetchrow(
        "INSERT INTO projects (id, name, description, enabled) VALUES ($1, $2, $3, $4) RETURNING *",
        project_id or new_id(),
        name,
        description,
        enabled,
    )


async def get_project(conn: asyncpg.Connection, project_id: str) -> asyncpg.Record | None:
    return await conn.fetchrow("SELECT * FROM projects WHERE id = $1", project_id)


async def get_project_by_name(conn: asyncpg.Connection, name: str) -> asyncpg.Record | None:
    return await conn.fetchrow("SELECT * FROM projects WHERE name = $1", name)


async def list_projects(conn: asyncpg.Connection, *, name: str | None = None) -> list[asyncpg.Record]:
    if name is not None:
        return await conn.fetch("SELECT * FROM projects WHERE name = $1", name)
    return await conn.fetch("SELECT * FROM projects ORDER BY name")


async def projects_for_user(conn: asyncpg.Connection, user_id: str) -> list[asyncpg.Record]:
    """Projects where the user holds at least one role."""
    return await conn.fetch(
        "SELECT * FROM projects WHERE id IN (SELECT project_id FROM role_assignments WHERE user_id = $1) ORDER BY name",
        user_id,
    )


# ----- users --------------------------------------------------------------------------------------------------


async def create_user(
    conn: asyncpg.Connection,
    *,
    name: str,
    password: str,
    default_project_id: str | None = None,
    enabled: bool = True,
) -> asyncpg.Record:
    """Stores a scrypt hash, never the password. Raises ``asyncpg.UniqueViolationError`` on a taken name."""
    return await conn.fetchrow(
        "INSERT INTO users (id, name, password_hash, default_project_id, enabled) VALUES ($1, $2, $3, $4, $5)"
        " RETURNING *",
        new_id(),
        name,
        hash_password(password),
        default_project_id,
        enabled,
    )


async def set_password(conn: asyncpg.Connection, user_id: str, password: str) -> None:
    await conn.execute(
        "UPDATE users SET password_hash = $2, updated_at = now() WHERE id = $1", user_id, hash_password(password)
    )


async def get_user(conn: asyncpg.Connection, user_id: str) -> asyncpg.Record | None:
    return await conn.fetchrow("SELECT * FROM users WHERE id = $1", user_id)


async def get_user_by_name(conn: asyncpg.Connection, name: str) -> asyncpg.Record | None:
    return await conn.fetchrow("SELECT * FROM users WHERE name = $1", name)


async def list_users(conn: asyncpg.Connection, *, name: str | None = None) -> list[asyncpg.Record]:
    if name is not None:
        return await conn.fetch("SELECT * FROM users WHERE name = $1", name)
    return await conn.fetch("SELECT * FROM users ORDER BY name")


# ----- roles --------------------------------------------------------------------------------------------------


async def create_role(conn: asyncpg.Connection, name: str) -> asyncpg.Record:
    """Idempotent: returns the existing role of that name if there is one."""
    row = await conn.fetchrow(
        "INSERT INTO roles (id, name) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING RETURNING *", new_id(), name
    )
    return row if row is not None else await get_role_by_name(conn, name)


async def get_role(conn: asyncpg.Connection, role_id: str) -> asyncpg.Record | None:
    return await conn.fetchrow("SELECT * FROM roles WHERE id = $1", role_id)


async def get_role_by_name(conn: asyncpg.Connection, name: str) -> asyncpg.Record | None:
    return await conn.fetchrow("SELECT * FROM roles WHERE name = $1", name)


async def list_roles(conn: asyncpg.Connection, *, names: list[str] | None = None) -> list[asyncpg.Record]:
    if names is not None:
        return await conn.fetch("SELECT * FROM roles WHERE name = ANY($1) ORDER BY name", names)
    return await conn.fetch("SELECT * FROM roles ORDER BY name")


async def assign_role(conn: asyncpg.Connection, *, user_id: str, project_id: str, role_id: str) -> None:
    """Idempotent."""
    await conn.execute(
        "INSERT INTO role_assignments (user_id, project_id, role_id) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
        user_id,
        project_id,
        role_id,
    )


async def unassign_role(conn: asyncpg.Connection, *, user_id: str, project_id: str, role_id: str) -> bool:
    status = await conn.execute(
        "DELETE FROM role_assignments WHERE user_id = $1 AND project_id = $2 AND role_id = $3",
        user_id,
        project_id,
        role_id,
    )
    return status != "DELETE 0"


async def roles_for(conn: asyncpg.Connection, user_id: str, project_id: str) -> list[asyncpg.Record]:
    """The roles ``user_id`` holds on ``project_id`` (empty: no access)."""
    return await conn.fetch(
        "SELECT r.* FROM roles r JOIN role_assignments a ON a.role_id = r.id"
        " WHERE a.user_id = $1 AND a.project_id = $2 ORDER BY r.name",
        user_id,
        project_id,
    )


async def list_assignments(
    conn: asyncpg.Connection,
    *,
    user_id: str | None = None,
    project_id: str | None = None,
    role_id: str | None = None,
) -> list[asyncpg.Record]:
    """Role assignments with the names of user, project and role, filtered by any of the three ids."""
    where, args = ["true"], []
    for col, val in (("a.user_id", user_id), ("a.project_id", project_id), ("a.role_id", role_id)):
        if val is not None:
            args.append(val)
            where.append(f"{col} = ${len(args)}")
    return await conn.fetch(
        "SELECT a.user_id, u.name AS user_name, a.project_id, p.name AS project_name, a.role_id, r.name AS role_name"
        " FROM role_assignments a JOIN users u ON u.id = a.user_id JOIN projects p ON p.id = a.project_id"
        f" JOIN roles r ON r.id = a.role_id WHERE {' AND '.join(where)} ORDER BY u.name, p.name, r.name",
        *args,
    )


# ----- revocation events --------------------------------------------------------------------------------------


async def revoke(
    conn: asyncpg.Connection,
    *,
    ttl: float,
    user_id: str | None = None,
    project_id: str | None = None,
    audit_id: str | None = None,
    reason: str = "",
) -> asyncpg.Record:
    """Record a revocation event: the token ``audit_id``, or every token of ``user_id`` (on ``project_id``, or on
    every project when it is None) issued before now. ``ttl``: the token lifetime, after which the event can
    match no live token and is dropped."""
    return await conn.fetchrow(
        "INSERT INTO revocation_events (user_id, project_id, audit_id, expires_at, reason)"
        " VALUES ($1, $2, $3, clock_timestamp() + make_interval(secs => $4), $5) RETURNING *",
        user_id,
        project_id,
        audit_id,
        float(ttl),
        reason,
    )


async def live_revocations(conn: asyncpg.Connection) -> list[asyncpg.Record]:
    """Every revocation event that can still match a live token; expired ones are deleted on the way."""
    await conn.execute("DELETE FROM revocation_events WHERE expires_at < now() - interval '1 minute'")
    return await conn.fetch(
        "SELECT id, user_id, project_id, audit_id, EXTRACT(EPOCH FROM issued_before)::float8 AS issued_before"
        " FROM revocation_events WHERE expires_at >= now() ORDER BY id"
    )
