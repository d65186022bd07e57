"""Coalesced casts and broadcasts on a real broker (``Transport.cast``, ``Transport.broadcast``): concurrent casts to
one topic travel as fewer messages, each is handled exactly once through the real dispatcher with its own
context, and a malformed request in a batch is dead-lettered alone."""

from __future__ import annotations

import asyncio

import aio_pika
import pytest

from common.context import RequestContext
from common.rpc import Transport, envelope
from common.rpc.server import dlq_name
from tests.functional.rpc.conftest import make_conf

pytestmark = pytest.mark.functional


class Recorder:
    def __init__(self, expected: int) -> None:
        self.seen: list[tuple[int, str | None]] = []
        self.expected = expected
        self.all_seen = asyncio.Event()

    async def work(self, ctx: RequestContext, seq: int) -> None:
        self.seen.append((seq, ctx.request_id))
        if len(self.seen) >= self.expected:
            self.all_seen.set()


def count_messages(transport: Transport, attr: str) -> list[int]:
    """Requests per message ``transport`` hands to the broker through ``attr`` (publish or _broadcast_now)."""
    sizes: list[int] = []
    real = getattr(transport, attr)

    async def counting(body: bytes, headers: dict, *args, **kwargs) -> None:
        sizes.append(int(headers["batch"]) if envelope.is_batch(headers) else 1)
        await real(body, headers, *args, **kwargs)

    setattr(transport, attr, counting)
    return sizes


async def test_concurrent_casts_to_one_topic_travel_together_and_each_runs_once(rabbit_vhost):
    url = rabbit_vhost.transport_url
    n = 300
    recorder = Recorder(n)
    server = await Transport.connect(make_conf(url, "server"), service="t")
    sender = await Transport.connect(make_conf(url, "sender"), service="t")
    try:
        await server.serve("t-coalesce", recorder)
        sizes = count_messages(sender, "publish")
        client = sender.client()
        await asyncio.gather(
            *(client.cast("t-coalesce", "work", RequestContext(request_id=f"req-{i}"), seq=i) for i in range(n))
        )
        async with asyncio.timeout(20):
            await recorder.all_seen.wait()
        await asyncio.sleep(0.2)  # a duplicate would show up here
        assert sorted(recorder.seen) == [(i, f"req-{i}") for i in range(n)]
        assert sum(sizes) == n
        assert max(sizes) > 1 and len(sizes) < n / 2, f"not coalesced: {len(sizes)} messages for {n} casts"
        # One cast alone is sent as it is, not as a batch of one.
        sizes.clear()
        await client.cast("t-coalesce", "work", RequestContext(request_id="alone"), seq=n)
        assert sizes == [1]
    finally:
        await sender.close()
        await server.close()


async def test_a_malformed_request_in_a_batch_goes_to_the_dead_letter_queue_alone(rabbit_vhost):
    url = rabbit_vhost.transport_url
    recorder = Recorder(2)
    server = await Transport.connect(make_conf(url, "server"), service="t")
    sender = await Transport.connect(make_conf(url, "sender"), service="t")
    try:
        await server.serve("t-dl", recorder)
        parts = [
            envelope.encode_request("work", {"seq": 1}, RequestContext(request_id="good-1"), "test"),
            envelope.encode_request("work", {"no_such_arg": 2}, RequestContext(request_id="bad"), "test"),
            envelope.encode_request("work", {"seq": 3}, RequestContext(request_id="good-3"), "test"),
        ]
        await sender.publish(*envelope.encode_batch(parts, "test"), "t-dl")
        async with asyncio.timeout(10):
            await recorder.all_seen.wait()
        assert sorted(recorder.seen) == [(1, "good-1"), (3, "good-3")]

        conn = await aio_pika.connect(rabbit_vhost.url)
        try:
            channel = await conn.channel()
            dlq = await channel.get_queue(dlq_name("t-dl"), ensure=False)
            arrived: asyncio.Queue[aio_pika.abc.AbstractIncomingMessage] = asyncio.Queue()
            await dlq.consume(arrived.put, no_ack=True)
            message = await asyncio.wait_for(arrived.get(), 10)
            assert not envelope.is_batch(message.headers)
            req = envelope.decode_request(message.body, message.headers)
            assert (req.ctx.request_id, req.args) == ("bad", {"no_such_arg": 2})
            await asyncio.sleep(0.3)
            assert arrived.empty()  # the good ones did not go there
        finally:
            await conn.close()
    finally:
        await sender.close()
        await server.close()


async def test_broadcasts_within_the_window_go_out_as_one_message(rabbit_vhost):
    url = rabbit_vhost.transport_url
    n = 50
    recorder = Recorder(n)
    listener = await Transport.connect(make_conf(url, "listener"), service="t")
    sender = await Transport.connect(make_conf(url, "sender", broadcast_batch_window=0.2), service="t")
    try:
        await listener.serve_fanout("t-fan-batch", recorder)
        sizes = count_messages(sender, "_broadcast_now")
        client = sender.client()
        await asyncio.gather(*(client.fanout("t-fan-batch", "work", RequestContext(), seq=i) for i in range(n)))
        async with asyncio.timeout(10):
            await recorder.all_seen.wait()
        assert sorted(seq for seq, _ in recorder.seen) == list(range(n))
        assert sizes == [n]
    finally:
        await sender.close()
        await listener.close()
