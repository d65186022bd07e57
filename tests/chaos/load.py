"""Steady client load through HAProxy for chaos scenarios: boots from several clients plus reads.

Every request is recorded with its start, end and outcome, so a scenario can tell how long clients saw no
success (the outage), when they recovered and which boots were accepted.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

import aiohttp

from tests.fixtures.cloud import admin_token

__all__ = ["Load", "Outcome", "admin_token"]


@dataclass
class Outcome:
    kind: str  # "boot" | "read"
    started: float
    ended: float
    status: int | None  # None: the connection failed
    error: str = ""

    @property
    def ok(self) -> bool:
        return self.status is not None and self.status < 500


@dataclass
class Load:
    """``boots`` boots at ``rate``/s spread over ``clients`` concurrent clients, and a reader every 50 ms."""

    endpoint: str
    boots: int
    rate: float = 10.0
    clients: int = 10
    name: str = "chaos"
    outcomes: list[Outcome] = field(default_factory=list)
    accepted: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    async def run(self) -> None:
        timeout = aiohttp.ClientTimeout(total=60)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            token = await admin_token(session, self.endpoint)
            self.headers = {"X-Auth-Token": token}
            async with session.get(f"{self.endpoint}/network/v2.0/networks?name=private", headers=self.headers) as r:
                self.net = (await r.json())["networks"][0]["id"]
            async with session.get(f"{self.endpoint}/image/v2/images?name=tiny", headers=self.headers) as r:
                self.image = (await r.json())["images"][0]["id"]
            queue: asyncio.Queue[int] = asyncio.Queue()
            done = asyncio.Event()

            async def feeder() -> None:
                for i in range(self.boots):
                    queue.put_nowait(i)
                    await asyncio.sleep(1 / self.rate)
                for _ in range(self.clients):
                    queue.put_nowait(-1)

            async def client() -> None:
                while (i := await queue.get()) >= 0:
                    await self._boot(session, i)

            reader = asyncio.create_task(self._reader(session, done))
            await asyncio.gather(feeder(), *(client() for _ in range(self.clients)))
            done.set()
            await reader

    async def _request(self, session: aiohttp.ClientSession, kind: str, method: str, path: str, **kw) -> dict | None:
        t0 = time.monotonic()
        try:
            async with session.request(method, f"{self.endpoint}{path}", headers=self.headers, **kw) as r:
                data = await r.json(content_type=None)
                self.outcomes.append(Outcome(kind, t0, time.monotonic(), r.status))
                if r.status >= 500:
                    self.errors.append(f"{method} {path}: {r.status} {data}")
                return data if r.status < 300 else None
        except (aiohttp.ClientError, TimeoutError, ValueError) as e:
            self.outcomes.append(Outcome(kind, t0, time.monotonic(), None, repr(e)))
            self.errors.append(f"{method} {path}: {e!r}")
            return None

    async def _boot(self, session: aiohttp.ClientSession, i: int) -> None:
        body = {"server": {"name": f"{self.name}-{i}", "flavorRef": "1", "imageRef": self.image,
                           "networks": [{"uuid": self.net}]}}  # fmt: skip
        data = await self._request(session, "boot", "POST", "/compute/v2.1/servers", json=body)
        if data is not None:
            self.accepted.append(data["server"]["id"])

    async def _reader(self, session: aiohttp.ClientSession, done: asyncio.Event) -> None:
        while not done.is_set():
            await self._request(session, "read", "GET", "/compute/v2.1/servers/detail?limit=20")
            if self.accepted:
                await self._request(session, "read", "GET", f"/compute/v2.1/servers/{self.accepted[-1]}")
            await asyncio.sleep(0.05)

    # ----- what the client saw ----------------------------------------------------------------------------------

    def failures(self) -> list[Outcome]:
        return [o for o in self.outcomes if not o.ok]

    def longest_gap(self) -> float:
        """Longest time between two consecutive successful request completions (the client-visible outage)."""
        ends = sorted(o.ended for o in self.outcomes if o.ok)
        return max((b - a for a, b in zip(ends, ends[1:], strict=False)), default=0.0)

    def recovery(self, fault_at: float) -> float:
        """Seconds from the fault until requests succeeded again for good: the end of the first successful
        request started after the last failure; 0 when no request failed."""
        failed = [o.ended for o in self.outcomes if not o.ok and o.ended >= fault_at]
        if not failed:
            return 0.0
        after = [o.ended for o in self.outcomes if o.ok and o.started >= max(failed)]
        return (min(after) if after else float("inf")) - fault_at
