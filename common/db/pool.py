"""The asyncpg pool each DB-owning service opens once at start (computes never do)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import TypeVar

import asyncpg
import tenacity
from oslo_config import cfg

from common import jsonutils

__all__ = ["Database", "init_connection"]

LOG = logging.getLogger(__name__)
T = TypeVar("T")

# What a lost or restarting server looks like to asyncpg: worth retrying the whole unit of work.
RETRYABLE = (
    OSError,
    asyncpg.exceptions.ConnectionDoesNotExistError,
    asyncpg.exceptions.CannotConnectNowError,
    asyncpg.exceptions.AdminShutdownError,
    asyncpg.exceptions.InterfaceError,
    asyncpg.exceptions.ConnectionFailureError,
    # Seen when the server shuts down mid-operation ("cannot switch to state 15; another operation is in
    # progress"): the connection is unusable and is dropped; a fresh one on the retry works.
    asyncpg.exceptions.InternalClientError,
)


async def init_connection(conn: asyncpg.Connection) -> None:
    """What every pooled connection gets: json and jsonb as Python values."""
    for typ in ("json", "jsonb"):
        await conn.set_type_codec(typ, encoder=jsonutils.dumps_str, decoder=jsonutils.loads, schema="pg_catalog")


async def _keep_session(conn: asyncpg.Connection) -> None:
    """Release without the reset query (asyncpg still rolls back a transaction left open)."""


class Database:
    """Owns one pool. ``run(fn)`` runs ``fn(conn)`` in a transaction, retried across connection loss."""

    def __init__(self, pool: asyncpg.Pool, retry_timeout: float, attempt_timeout: float = 15.0) -> None:
        self.pool = pool
        self.retry_timeout = retry_timeout
        self.attempt_timeout = attempt_timeout

    @classmethod
    async def connect(cls, conf: cfg.ConfigOpts, *, session_reset: bool = False) -> Database:
        """Open the pool. Stratus never changes session state on pooled connections (no ``SET``, ``LISTEN``,
        cursors or session-level locks: its advisory locks are transaction-level, and a listener gets its own
        connection), so by default a release skips asyncpg's reset query (advisory unlock, ``CLOSE ALL``,
        ``UNLISTEN``, ``RESET ALL``), a round trip each time. ``session_reset=True`` restores it."""
        dsn = conf.database.connection
        async for attempt in tenacity.AsyncRetrying(
            retry=tenacity.retry_if_exception_type(RETRYABLE),
            wait=tenacity.wait_exponential_jitter(multiplier=0.2, max=2, jitter=0.2),
            stop=tenacity.stop_after_delay(conf.database.retry_timeout),
            reraise=True,
        ):
            with attempt:
                pool = await asyncpg.create_pool(
                    dsn,
                    min_size=conf.database.min_pool_size,
                    max_size=conf.database.max_pool_size,
                    init=init_connection,
                    reset=None if session_reset else _keep_session,
                    command_timeout=60,
                )
        return cls(pool, conf.database.retry_timeout, conf.database.attempt_timeout)

    async def close(self) -> None:
        await self.pool.close()

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[asyncpg.Connection]:
        """One connection inside one transaction; no retry (use ``run`` for that).

        Acquiring is bounded: asyncpg's ``acquire()`` without a timeout waits forever on a pool whose
        connections a server restart broke (asyncpg issues 431, 955).
        """
        async with self.pool.acquire(timeout=self.attempt_timeout) as conn, conn.transaction():
            yield conn

    async def run(self, fn: Callable[[asyncpg.Connection], Awaitable[T]], *, transaction: bool = True) -> T:
        """Run ``fn(conn)`` in a transaction; on a lost connection retry the whole unit of work.

        ``fn`` must be safe to run again after a failed attempt (it was rolled back). ``transaction=False`` for an
        ``fn`` that issues one statement (atomic on its own): no BEGIN and COMMIT, two round trips fewer.
        """
        async for attempt in tenacity.AsyncRetrying(
            retry=tenacity.retry_if_exception_type(RETRYABLE),
            wait=tenacity.wait_exponential_jitter(multiplier=0.1, max=2, jitter=0.2),
            stop=tenacity.stop_after_delay(self.retry_timeout),
            before_sleep=lambda rs: LOG.warning("database unreachable, retrying: %s", rs.outcome.exception()),
            reraise=True,
        ):
            with attempt:
                # Each attempt is bounded as a whole (acquire, statements, commit, release): a unit of work
                # hung on a broken connection becomes a retry (TimeoutError is an OSError), never a handler
                # that holds its message forever while the instance waits in BUILD.
                async with asyncio.timeout(self.attempt_timeout):
                    if not transaction:
                        async with self.pool.acquire() as conn:
                            return await fn(conn)
                    async with self.transaction() as conn:
                        return await fn(conn)
        raise AssertionError("unreachable")

    async def ping(self) -> None:
        async with self.pool.acquire(timeout=2) as conn:
            await conn.fetchval("SELECT 1")
