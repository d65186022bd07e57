"""The transport against a real three-node cluster: kill -9 the attached node under load and check the contract.

One node kill per test (each test brings its node back); the cluster is shared by the session.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from common import exceptions
from common.context import RequestContext
from common.rpc import Transport
from common.rpc.server import redelivered
from common.rpc.transport import node_name
from tests.fixtures.rabbitmq import RabbitCluster
from tests.functional.rpc.conftest import make_conf

pytestmark = pytest.mark.functional
CTX = RequestContext()


class Sink:
    """Records every delivery; duplicates (at-least-once) are counted, not lost."""

    def __init__(self) -> None:
        self.seen: dict[int, int] = {}
        self.arrived = asyncio.Event()

    async def put(self, ctx: RequestContext, seq: int) -> None:
        self.seen[seq] = self.seen.get(seq, 0) + 1
        self.arrived.set()

    async def echo(self, ctx: RequestContext, value: int) -> int:
        return value


def _index_of(cluster: RabbitCluster, transport: Transport) -> int:
    return [node_name(u) for u in cluster.urls].index(transport.broker_node)


async def _wait(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.05)


async def _publish_load(client, topic: str, count: int, rate: float, confirmed: list[tuple[int, float]]) -> None:
    """``count`` casts at ``rate``/s, each its own task (many in flight, as the notes advise)."""

    async def one(seq: int) -> None:
        await client.cast(topic, "put", CTX, seq=seq)
        confirmed.append((seq, time.monotonic()))

    tasks = []
    for seq in range(count):
        tasks.append(asyncio.create_task(one(seq)))
        await asyncio.sleep(1 / rate)
    await asyncio.gather(*tasks)


def _longest_gap(times: list[float]) -> float:
    times = sorted(times)
    return max((b - a for a, b in zip(times, times[1:], strict=False)), default=0.0)


async def test_strategies_order_nodes_as_configured(rabbit_cluster: RabbitCluster, cluster_vhost: str):
    url = rabbit_cluster.transport_url_for(cluster_vhost)
    names = [node_name(u) for u in rabbit_cluster.urls]
    static = [await Transport.connect(make_conf(url, f"s{i}"), service="t") for i in range(2)]
    rr = [
        await Transport.connect(make_conf(url, f"rr{i}", failover_strategy="roundrobin"), service="t") for i in range(6)
    ]
    try:
        assert [t.broker_node for t in static] == [names[0], names[0]]
        assert all(sorted(t.node_names()) == sorted(names) for t in rr)
        assert all(t.broker_node == t.node_names()[0] for t in rr)  # attached to its preferred node
        assert len({t.broker_node for t in rr}) >= 2  # spread across the cluster
    finally:
        for t in static + rr:
            await t.close()


async def test_kill_attached_node_under_publish_load(rabbit_cluster: RabbitCluster, cluster_vhost: str):
    """0 confirmed casts lost, the consumer resumes elsewhere, the publisher's outage is short, and both return
    to their preferred node once it is back."""
    url = rabbit_cluster.transport_url_for(cluster_vhost)
    opts = {"preferred_node_check_interval": 1.0}
    consumer = await Transport.connect(make_conf(url, "consumer", **opts), service="sink")
    publisher = await Transport.connect(make_conf(url, "publisher", **opts), service="pub")
    sink = Sink()
    victim = _index_of(rabbit_cluster, publisher)
    try:
        await consumer.serve("ha.sink", sink)
        assert _index_of(rabbit_cluster, consumer) == victim  # static: both on the first node
        confirmed: list[tuple[int, float]] = []
        load = asyncio.create_task(_publish_load(publisher.client(), "ha.sink", 400, 100.0, confirmed))
        await asyncio.sleep(1.5)
        killed_at = time.monotonic()
        await asyncio.to_thread(rabbit_cluster.kill, victim)
        await asyncio.wait_for(load, 60)
        outage = _longest_gap([t for _, t in confirmed])
        await _wait(lambda: len(sink.seen) == 400, 30, "every confirmed cast to be consumed")
        assert sorted(sink.seen) == list(range(400)), "a confirmed cast was lost"
        assert publisher.broker_node != rabbit_cluster.urls[victim]
        assert consumer.connected and publisher.connected
        print(f"publisher outage {outage * 1000:.0f} ms; duplicates {sum(sink.seen.values()) - 400}")
        assert outage < 5.0
        assert time.monotonic() - killed_at < 60
        # The node comes back: both move back to it (their preferred node) within a few checks.
        await asyncio.to_thread(rabbit_cluster.start_node, victim)
        await _wait(lambda: publisher.broker_node == node_name(rabbit_cluster.urls[victim]), 20, "publisher back")
        await _wait(lambda: consumer.broker_node == node_name(rabbit_cluster.urls[victim]), 20, "consumer back")
        # And it still works after moving back.
        await publisher.client().cast("ha.sink", "put", CTX, seq=1000)
        await _wait(lambda: 1000 in sink.seen, 10, "a cast after the return")
    finally:
        await publisher.close()
        await consumer.close()
        if not rabbit_cluster.nodes[victim].running:
            await asyncio.to_thread(rabbit_cluster.start_node, victim)


async def test_calls_across_a_node_kill_fail_fast_or_succeed(rabbit_cluster: RabbitCluster, cluster_vhost: str):
    """In-flight calls never hang: each one returns, or fails with ServiceUnavailable / RpcTimeout promptly."""
    url = rabbit_cluster.transport_url_for(cluster_vhost)
    server = await Transport.connect(make_conf(url, "server", failover_strategy="static"), service="echo")
    caller = await Transport.connect(make_conf(url, "caller"), service="caller")
    victim = _index_of(rabbit_cluster, caller)
    try:
        await server.serve("ha.echo", Sink())
        client = caller.client()
        assert await client.call("ha.echo", "echo", CTX, value=1, timeout=10) == 1
        outcomes: list[str] = []

        async def one(i: int) -> None:
            t0 = time.monotonic()
            try:
                assert await client.call("ha.echo", "echo", CTX, value=i, timeout=10) == i
                outcomes.append("ok")
            except (exceptions.ServiceUnavailable, exceptions.RpcTimeout) as e:
                outcomes.append(type(e).__name__)
            assert time.monotonic() - t0 < 12, "a call hung past its timeout"

        async def load() -> None:
            tasks = []
            for i in range(200):
                tasks.append(asyncio.create_task(one(i)))
                await asyncio.sleep(0.01)
            await asyncio.gather(*tasks)

        job = asyncio.create_task(load())
        await asyncio.sleep(0.8)
        await asyncio.to_thread(rabbit_cluster.kill, victim)
        await asyncio.wait_for(job, 40)
        print("call outcomes:", {k: outcomes.count(k) for k in set(outcomes)})
        assert outcomes.count("ok") > 100
        assert await client.call("ha.echo", "echo", CTX, value=7, timeout=10) == 7  # works after the failover
    finally:
        await caller.close()
        await server.close()
        if not rabbit_cluster.nodes[victim].running:
            await asyncio.to_thread(rabbit_cluster.start_node, victim)


class TwoStep:
    """Like the scheduler: step one is recorded (a claim), step two casts on. A duplicate that finds step one
    done drops out, but a *redelivered* copy finishes step two: its first delivery may have been cut off."""

    def __init__(self, transport: Transport) -> None:
        self.transport = transport
        self.claimed: set[int] = set()
        self.forwarded: set[int] = set()

    async def work(self, ctx: RequestContext, seq: int) -> None:
        if seq in self.claimed and not redelivered():
            return
        self.claimed.add(seq)
        await asyncio.sleep(0.3)
        await self.transport.client().cast("ha.done", "put", ctx, seq=seq)
        self.forwarded.add(seq)


async def test_work_cut_off_by_a_node_kill_is_finished_by_the_redelivered_copy(
    rabbit_cluster: RabbitCluster, cluster_vhost: str
):
    url = rabbit_cluster.transport_url_for(cluster_vhost)
    worker = await Transport.connect(make_conf(url, "worker"), service="worker")
    sink_side = await Transport.connect(make_conf(url, "sink", failover_strategy="roundrobin"), service="sink")
    publisher = await Transport.connect(make_conf(url, "publisher"), service="pub")
    victim = _index_of(rabbit_cluster, worker)
    sink, two_step = Sink(), TwoStep(worker)
    try:
        await sink_side.serve("ha.done", sink)
        await worker.serve("ha.work", two_step)
        client = publisher.client()
        await asyncio.gather(*(client.cast("ha.work", "work", CTX, seq=i) for i in range(40)))
        await _wait(lambda: len(two_step.claimed) >= 20, 10, "handlers in flight")
        await asyncio.to_thread(rabbit_cluster.kill, victim)
        await _wait(lambda: set(sink.seen) >= set(range(40)), 40, "every claimed piece of work to be forwarded")
    finally:
        for t in (publisher, worker, sink_side):
            await t.close()
        if not rabbit_cluster.nodes[victim].running:
            await asyncio.to_thread(rabbit_cluster.start_node, victim)
