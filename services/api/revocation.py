"""Revoked tokens: the revocation events of the database, held in memory by every API node.

Tokens are signed, not stored, so a token stays valid by signature until it expires; a revocation event refuses
it sooner. Events name one token (its audit id) or every token of a user, on one project or on all, issued
before a moment (Keystone's revocation events). Each node reloads the live events every
``[api] revocation_refresh_interval`` seconds and learns the events it records itself at once, so a role
removed on one node stops that user's tokens on every node within the interval.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Mapping
from typing import Any

from common.db import identity as db
from common.db.pool import Database
from services.api.auth import TokenPayload

__all__ = ["Revocations"]

LOG = logging.getLogger(__name__)


class Revocations:
    """The live revocation events; ``revoked(payload)`` is a dictionary lookup, cheap on every request."""

    def __init__(self, db_: Database, interval: float) -> None:
        self._db = db_
        self._interval = interval
        self._audit_ids: set[str] = set()
        # user id -> [(project id or None for all projects, issued_before epoch seconds)]
        self._by_user: dict[str, list[tuple[str | None, float]]] = {}
        self._task: asyncio.Task[None] | None = None
        self.loaded = asyncio.Event()

    def revoked(self, token: TokenPayload) -> bool:
        """Whether an event matches ``token``."""
        if token.audit_id in self._audit_ids:
            return True
        for project_id, before in self._by_user.get(token.user_id, ()):
            if (project_id is None or project_id == token.project_id) and token.issued_at <= before:
                return True
        return False

    def learn(self, events: Iterable[Mapping[str, Any]]) -> None:
        """Add events (rows of ``revocation_events``) to what this node refuses, without waiting for a reload."""
        for e in events:
            if e["audit_id"]:
                self._audit_ids.add(e["audit_id"])
            if e["user_id"]:
                before = e["issued_before"]
                before = before.timestamp() if hasattr(before, "timestamp") else float(before)
                self._by_user.setdefault(e["user_id"], []).append((e["project_id"], before))

    async def reload(self) -> None:
        """Replace what is held with the database's live events. May raise (database unreachable)."""
        rows = await self._db.run(db.live_revocations)
        fresh = Revocations(self._db, self._interval)
        fresh.learn(rows)
        self._audit_ids, self._by_user = fresh._audit_ids, fresh._by_user
        self.loaded.set()

    async def start_refreshing(self) -> None:
        """Reload in the background every interval until ``stop``."""
        self._task = asyncio.create_task(self._loop(), name="revocation-refresh")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            try:
                await self.reload()
            except Exception as e:  # keep refusing what we knew; the next round retries
                LOG.warning("could not reload revocation events (keeping the %d known): %s", self.count, e)

    @property
    def count(self) -> int:
        return len(self._audit_ids) + sum(len(v) for v in self._by_user.values())
