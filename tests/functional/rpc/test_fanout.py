"""Fanout on a real broker: a broadcast reaches every bound process, goes out with nobody bound, and fails with
``ServiceUnavailable`` (not silently) when the sender has no broker connection. Broadcasts are unconfirmed and
consumed without acks (``Transport.broadcast``, ``serve_fanout``)."""

from __future__ import annotations

import asyncio

import pytest

from common import exceptions
from common.context import RequestContext
from common.rpc import Transport
from tests.functional.rpc.conftest import make_conf

pytestmark = pytest.mark.functional
CTX = RequestContext()


class Listener:
    def __init__(self, expected: int) -> None:
        self.seen: list[int] = []
        self.expected = expected
        self.all_seen = asyncio.Event()

    async def report(self, ctx: RequestContext, seq: int) -> None:
        self.seen.append(seq)
        if len(self.seen) >= self.expected:
            self.all_seen.set()


async def test_broadcast_reaches_every_listener_and_fails_loudly_when_disconnected(rabbit_vhost):
    url = rabbit_vhost.transport_url
    listeners = [Listener(50), Listener(50)]
    transports = [await Transport.connect(make_conf(url, f"listener-{i}"), service="t") for i in range(2)]
    sender = await Transport.connect(make_conf(url, "sender"), service="t")
    try:
        client = sender.client()
        await client.fanout("t-nobody", "report", CTX, seq=0)  # nobody bound: fine, nothing to deliver
        for transport, listener in zip(transports, listeners, strict=True):
            await transport.serve_fanout("t-fanout", listener)
        for seq in range(50):
            await client.fanout("t-fanout", "report", CTX, seq=seq)
        async with asyncio.timeout(10):
            for listener in listeners:
                await listener.all_seen.wait()
        assert [sorted(listener.seen) for listener in listeners] == [list(range(50))] * 2

        await sender.close()
        with pytest.raises(exceptions.ServiceUnavailable):
            await client.fanout("t-fanout", "report", CTX, seq=50)
    finally:
        for transport in [*transports, sender]:
            await transport.close()
