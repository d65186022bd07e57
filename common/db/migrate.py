"""Numbered SQL migrations (``migrations/NNNN_name.sql``), applied in order, each once, each in a transaction."""

from __future__ import annotations

import logging
from pathlib import Path

import asyncpg

__all__ = ["MIGRATIONS_DIR", "sync"]

LOG = logging.getLogger(__name__)
MIGRATIONS_DIR = Path(__file__).parent / "migrations"
# Any fixed number works; it only has to be the same for every process that migrates this database.
_LOCK_KEY = 0x5742_7275


async def sync(dsn: str) -> list[str]:
    """Apply pending migrations; returns the names applied. Safe to run concurrently and repeatedly."""
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("SELECT pg_advisory_lock($1)", _LOCK_KEY)
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations (version text PRIMARY KEY,"
            " applied_at timestamptz NOT NULL DEFAULT now())"
        )
        done = {r["version"] for r in await conn.fetch("SELECT version FROM schema_migrations")}
        applied = []
        for path in sorted(MIGRATIONS_DIR.glob("*.sql")):
            if path.stem in done:
                continue
            async with conn.transaction():
                await conn.execute(path.read_text())
                await conn.execute("INSERT INTO schema_migrations (version) VALUES ($1)", path.stem)
            LOG.info("applied migration %s", path.stem)
            applied.append(path.stem)
        return applied
    finally:
        await conn.close()
