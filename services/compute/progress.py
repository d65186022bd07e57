"""A build's progress, sent to the conductor in as few casts as possible.

Every step of a build is an action event users read (``server event show``), but a cast and a transaction per
step made those events most of a boot's cost (docs/scheduler.md, "Where the time goes"). So a build's events
and intermediate state changes wait here and ride with its next state change: a build that finishes quickly
costs one cast (its final update carries every step). A build that takes longer than
``[compute] progress_interval`` (an image download, a real guest) sends what it has so far when that interval
has passed, so users watching a slow build still see each step within that bound.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

from common.context import RequestContext

if TYPE_CHECKING:
    from services.scheduler.rpcapi import ConductorAPI

__all__ = ["BuildProgress"]

LOG = logging.getLogger(__name__)


class BuildProgress:
    """Events and the pending state change of one instance's operation; ``finish()`` or ``flush()`` sends them."""

    def __init__(
        self,
        conductor: ConductorAPI,
        ctx: RequestContext,
        instance_id: str,
        host: str,
        interval: float,
        spawn: Callable[[Coroutine[Any, Any, None]], None],
    ) -> None:
        """``spawn`` runs a timed flush in the background (the owner keeps it referenced and cancels it when it
        closes)."""
        self.conductor = conductor
        self.ctx = ctx
        self.instance_id = instance_id
        self.host = host
        self.interval = interval
        self._events: list[dict[str, Any]] = []
        self._update: tuple[dict[str, Any], list[str | None], dict[str, Any] | None] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._spawn = spawn
        self._lock = asyncio.Lock()

    def event(self, event: str, result: str, details: str | None = None) -> None:
        self._events.append(self.conductor.event(event, result, self.host, details))
        self._arm()

    def update(self, values: dict[str, Any], expected_task_state: list[str | None]) -> None:
        """A guarded intermediate state change (e.g. ``spawning``); superseded by a later one not yet sent,
        whose guard must then accept the state this one would have set."""
        self._update = (values, expected_task_state, None)
        self._arm()

    def take_events(self) -> list[dict[str, Any]]:
        """The events not yet sent (for a caller that sends them itself, e.g. with ``build_failed``)."""
        self._disarm()
        events, self._events = self._events, []
        return events

    async def flush(self) -> None:
        """Send what is pending (one cast). On failure it stays pending for the next send, and this raises."""
        async with self._lock:
            self._disarm()
            events, update = self._events, self._update
            self._events, self._update = [], None
            try:
                if update is not None:
                    await self.conductor.instance_update(
                        self.ctx, instance_id=self.instance_id, values=update[0],
                        expected_task_state=update[1], event=update[2], events=events,
                    )  # fmt: skip
                elif events:
                    await self.conductor.action_events(self.ctx, instance_id=self.instance_id, events=events)
            except BaseException:
                self._events = events + self._events
                self._update = self._update or update  # a newer update, queued meanwhile, wins
                raise

    async def finish(
        self, values: dict[str, Any], expected_task_state: list[str | None], event: dict[str, Any] | None = None
    ) -> None:
        """The final state change (with ``event``, the outcome), carrying every pending event and replacing a
        pending intermediate update. One cast."""
        self._update = (values, expected_task_state, event)
        await self.flush()

    def _arm(self) -> None:
        if self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self.interval, self._on_timer)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _on_timer(self) -> None:
        self._timer = None
        self._spawn(self._flush_quietly())

    async def _flush_quietly(self) -> None:
        try:
            await self.flush()
        except Exception as e:  # kept pending: the build's next send carries it
            LOG.warning("instance %s: sending build progress failed (retried with the next): %s", self.instance_id, e)
