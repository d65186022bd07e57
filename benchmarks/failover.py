"""Outage seen by a publisher and by an HTTP client (through HAProxy) when the attached RabbitMQ node is killed.

Starts its own PostgreSQL, a three-node RabbitMQ cluster and an HA cloud (2 API nodes behind HAProxy, 2
schedulers, a compute process simulating 4 hosts on libvirt test:///default). Every process uses
failover_strategy=static, so all are attached to node 0. Each round: a publisher casts 200 msg/s to a quorum
queue and HTTP clients boot servers (and read) through HAProxy; 2 s in, node 0 gets kill -9; then it is
started again and everyone returns to it (preferred node) before the next round.

Prints per round and the median of the rounds; JSON on the last line with publisher_outage_ms, http_outage_ms
and lost (confirmed casts never consumed + accepted boots that did not end ACTIVE/ERROR). ``--record``
appends the result to benchmarks/RESULTS.md.

    python -m benchmarks.failover --rounds 5
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks._results import record  # noqa: E402
from common.context import RequestContext  # noqa: E402
from common.rpc import Transport  # noqa: E402
from tests.chaos.conftest import wait_settled  # noqa: E402
from tests.chaos.load import Load  # noqa: E402
from tests.fixtures.cloud import Cloud  # noqa: E402
from tests.fixtures.postgres import PostgresServer  # noqa: E402
from tests.fixtures.rabbitmq import RabbitCluster  # noqa: E402
from tests.functional.rpc.conftest import make_conf  # noqa: E402

CTX = RequestContext()


class Sink:
    def __init__(self) -> None:
        self.seen: set[int] = set()

    async def put(self, ctx: RequestContext, seq: int) -> None:
        self.seen.add(seq)


async def _publish(transport: Transport, start: int, seconds: float, rate: float, times: list[float]) -> list[int]:
    client = transport.client()
    confirmed: list[int] = []

    async def one(seq: int) -> None:
        await client.cast("bench.failover", "put", CTX, seq=seq)
        confirmed.append(seq)
        times.append(time.monotonic())

    tasks = []
    for i in range(int(seconds * rate)):
        tasks.append(asyncio.create_task(one(start + i)))
        await asyncio.sleep(1 / rate)
    await asyncio.gather(*tasks, return_exceptions=True)
    return confirmed


async def _until(predicate, timeout: float) -> bool:
    for _ in range(int(timeout * 10)):
        if predicate():
            return True
        await asyncio.sleep(0.1)
    return predicate()


def _gap(times: list[float]) -> float:
    times = sorted(times)
    return max((b - a for a, b in zip(times, times[1:], strict=False)), default=0.0)


async def round_(cloud: Cloud, rabbit: RabbitCluster, pub: Transport, sink: Sink, n: int) -> dict:
    seconds = 8.0
    load = Load(cloud.endpoint, boots=int(seconds * 15), rate=15, clients=10, name=f"fo{n}")
    times: list[float] = []
    http = asyncio.create_task(load.run())
    publisher = asyncio.create_task(_publish(pub, n * 100_000, seconds, 200, times))
    await asyncio.sleep(2.0)
    await asyncio.to_thread(rabbit.kill, 0)
    confirmed = await publisher
    await http
    await _until(lambda: set(confirmed) <= sink.seen, 30)
    lost = len(set(confirmed) - sink.seen)
    try:
        _, states = await wait_settled(cloud.dsn, load.accepted, 60)
    except AssertionError:
        print(rabbit.ctl(1, "list_queues", "-p", cloud.vhost, "name", "messages", "messages_unacknowledged"))
        raise
    await asyncio.to_thread(rabbit.start_node, 0)
    back = f"127.0.0.1:{rabbit.nodes[0].amqp_port}"
    await _until(lambda: pub.broker_node == back, 30)
    await asyncio.sleep(4)  # the services' preferred-node checks (every 2 s) move them back too
    result = {
        "publisher_outage_ms": round(_gap(times) * 1000),
        "http_outage_ms": round(load.longest_gap() * 1000),
        "lost": lost,
        "http_errors": len(load.failures()),
        "boots": len(load.accepted),
        "boot_states": states,
    }
    print(f"round {n}: {json.dumps(result)}", flush=True)
    return result


async def bench(cloud: Cloud, rabbit: RabbitCluster, rounds: int) -> dict:
    url = rabbit.transport_url_for(cloud.vhost)
    consumer = await Transport.connect(make_conf(url, "bench-consumer", preferred_node_check_interval=2), "sink")
    pub = await Transport.connect(make_conf(url, "bench-publisher", preferred_node_check_interval=2), "pub")
    sink = Sink()
    await consumer.serve("bench.failover", sink)
    try:
        results = [await round_(cloud, rabbit, pub, sink, i) for i in range(rounds)]
    finally:
        await pub.close()
        await consumer.close()
    return {
        "publisher_outage_ms": statistics.median(r["publisher_outage_ms"] for r in results),
        "http_outage_ms": statistics.median(r["http_outage_ms"] for r in results),
        "lost": sum(r["lost"] for r in results),
        "http_errors": sum(r["http_errors"] for r in results),
        "rounds": rounds,
        "publisher_outage_ms_all": [r["publisher_outage_ms"] for r in results],
        "http_outage_ms_all": [r["http_outage_ms"] for r in results],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--record", action="store_true", help="append the result to benchmarks/RESULTS.md")
    args = ap.parse_args()
    pg, rabbit = PostgresServer(), RabbitCluster(3)
    logging.basicConfig(
        filename=Path(tempfile.gettempdir()) / "stratus-failover-bench.log",
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
        level=logging.INFO,
    )
    with tempfile.TemporaryDirectory(prefix="stratus-failover-") as tmp:
        try:
            pg.start()
            rabbit.start()
            cloud = Cloud(
                Path(tmp), pg, rabbit, compute_hosts=4, schedulers=2, api_nodes=2, subnet_cidr="10.96.0.0/20",
                compute_overrides={"vcpus": 64, "memory_mb": 262144, "local_gb": 4000},
                extra_config={
                    "DEFAULT": {"debug": "false"},
                    "messaging": {"failover_strategy": "static", "preferred_node_check_interval": 2},
                },
            )  # fmt: skip
            cloud.start(timeout=120)
            try:
                result = asyncio.run(bench(cloud, rabbit, args.rounds))
            except BaseException:
                keep = Path(tempfile.gettempdir()) / "stratus-failover-logs"
                shutil.copytree(Path(tmp) / "logs", keep, dirs_exist_ok=True)
                raise
            finally:
                cloud.stop()
        finally:
            rabbit.stop(graceful=False)
            rabbit.cleanup()
            pg.stop()
            pg.cleanup()
    if args.record:
        record("failover.py", f"rounds={args.rounds}, kill -9 of node 0 (all attached), 200 casts/s + 15 boots/s "
               "via HAProxy", result)  # fmt: skip
    print(json.dumps(result))


if __name__ == "__main__":
    main()
