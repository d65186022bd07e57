"""Which scheduler persists capacity reports: the one holding a PostgreSQL advisory lock.

Every scheduler hears every report (the ``capacity`` fanout), so letting all of them write the same rows only
multiplies the database's work. The lock is session-level, on a connection of its own (never a pooled one, which
would be handed to other work), so it goes with the holder: a scheduler that dies or loses its database
connection frees it, and another one takes over at its next try.
"""

from __future__ import annotations

import asyncpg

from common.db.pool import RETRYABLE

__all__ = ["ReportPersisterLock"]

# Any fixed 64-bit key; the other advisory locks of Stratus are transaction-level ones on hashed names.
_KEY = 0x5354_5253_4348_0001


class ReportPersisterLock:
    """``held()`` answers whether this process persists reports, trying to take the lock when it does not."""

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self._conn: asyncpg.Connection | None = None
        self._held = False

    async def held(self) -> bool:
        """True while this process holds the lock. Never raises for a lost database: answers False and tries
        again (on a new connection) next time."""
        if self._held and self._conn is not None and not self._conn.is_closed():
            return True
        self._held = False
        try:
            if self._conn is None or self._conn.is_closed():
                self._conn = await asyncpg.connect(self.dsn, timeout=5)
            self._held = bool(await self._conn.fetchval("SELECT pg_try_advisory_lock($1)", _KEY))
        except (*RETRYABLE, asyncpg.PostgresError, TimeoutError):
            await self.close()
        return self._held

    async def close(self) -> None:
        """Give the lock up (closing its connection); idempotent."""
        conn, self._conn, self._held = self._conn, None, False
        if conn is not None and not conn.is_closed():
            try:
                await conn.close(timeout=2)
            except (*RETRYABLE, asyncpg.PostgresError, TimeoutError):
                conn.terminate()
