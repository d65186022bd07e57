"""Scheduling decisions per second with N parallel schedulers over H hosts fed by the capacity fanout.

Starts its own PostgreSQL (devstack's settings: durable, ``synchronous_commit`` off) and RabbitMQ and a Stratus
control plane (API, network, N schedulers) but no compute service: the benchmark itself publishes H hosts'
capacity reports on the ``capacity`` fanout (every report_interval, as computes do) and plays every compute with
one queue bound to ``compute.*``. It inserts R instances waiting for scheduling (random flavors), casts
``build_instances`` for each, and measures for each decision "request consumed by a scheduler → claim committed
→ build cast received" while the schedulers drain a queue holding every request (hosts in the DB and requests
queued before they start); then audits every host for over-commit (usage above its limit, or usage different
from the sum of its allocations).

    python -m benchmarks.scheduler --hosts 1000 --schedulers 3 --requests 5000

JSON on the last line: decisions_per_s, p50_ms, p99_ms, lost_races_per_1000, overcommitted_hosts, ...
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import aio_pika
import asyncpg

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks._cpu import CpuMeter  # noqa: E402
from benchmarks._results import record  # noqa: E402
from common import config  # noqa: E402
from common.context import RequestContext  # noqa: E402
from common.db import compute_nodes  # noqa: E402
from common.rpc import Transport, envelope  # noqa: E402
from common.rpc.server import dlq_name, work_queue_arguments  # noqa: E402
from common.rpc.transport import DLX, EXCHANGE  # noqa: E402
from services.scheduler.rpcapi import ConductorAPI, SchedulerAPI  # noqa: E402
from tests.fixtures.cloud import Cloud  # noqa: E402
from tests.fixtures.postgres import PostgresServer  # noqa: E402
from tests.fixtures.processes import ServiceProcess  # noqa: E402
from tests.fixtures.rabbitmq import RabbitCluster  # noqa: E402

FLAVORS = [  # (name, vcpus, ram_mb, disk_gb)
    ("m1.tiny", 1, 512, 1),
    ("m1.small", 1, 2048, 20),
    ("m1.medium", 2, 4096, 40),
    ("m1.large", 4, 8192, 80),
]

AUDIT = """
SELECT count(*) FILTER (WHERE n.vcpus_used > (n.vcpus - n.reserved_host_cpus) * n.cpu_allocation_ratio
                          OR n.memory_mb_used > (n.memory_mb - n.reserved_host_memory_mb) * n.ram_allocation_ratio
                          OR n.local_gb_used > (n.local_gb - n.reserved_host_disk_gb) * n.disk_allocation_ratio
                          OR n.vcpus_used <> COALESCE(a.v, 0) OR n.memory_mb_used <> COALESCE(a.m, 0)
                          OR n.local_gb_used <> COALESCE(a.d, 0)) AS bad,
       count(*) AS hosts, COALESCE(sum(a.n), 0) AS allocations
FROM compute_nodes n LEFT JOIN (
    SELECT compute_node_id, sum(vcpus) v, sum(memory_mb) m, sum(disk_gb) d, count(*) n
    FROM allocations GROUP BY compute_node_id) a ON a.compute_node_id = n.id
"""


def host_report(i: int, rng: random.Random) -> dict:
    big = i % 4 == 0
    return {
        "host": f"sim-{i:04d}",
        "hypervisor_hostname": f"sim-{i:04d}",
        "hypervisor_type": "QEMU",
        "virt_type": "qemu",
        "vcpus": 32 if big else 8,
        "memory_mb": 65536 if big else 16384,
        "local_gb": 1000 if big else 200,
        "running_vms": 0,
        "cpu_allocation_ratio": 4.0,
        "ram_allocation_ratio": 1.0,
        "disk_allocation_ratio": 1.0,
        "reserved_host_memory_mb": 512,
        "availability_zone": "nova",
        "cpu_info": {"arch": "x86_64"},
    }


async def insert_instances(dsn: str, n: int, rng: random.Random) -> list[dict]:
    conn = await asyncpg.connect(dsn)
    try:
        project = await conn.fetchval("SELECT id FROM projects WHERE name = 'admin'")
        user = await conn.fetchval("SELECT id FROM users WHERE name = 'admin'")
        specs, inst_rows, action_rows = [], [], []
        for i in range(n):
            name, vcpus, ram, disk = rng.choice(FLAVORS)
            flavor = {"id": name, "name": name, "vcpus": vcpus, "ram_mb": ram, "disk_gb": disk, "extra_specs": {}}
            iid, req = str(uuid.uuid4()), f"req-{uuid.uuid4()}"
            inst_rows.append((iid, project, user, f"b{i}", f"b{i}", name, json.dumps(flavor)))
            action_rows.append((iid, req, project, user))
            specs.append({"request_id": req, "spec": {
                "instance_id": iid, "project_id": project, "user_id": user, "flavor": flavor,
                "image": {"id": "none", "properties": {}}, "networks": [], "availability_zone": None,
                "scheduler_hints": {}, "attempt": 1, "excluded_hosts": [], "failures": []}})  # fmt: skip
        await conn.executemany(
            "INSERT INTO instances (id, project_id, user_id, name, hostname, flavor_id, flavor, vm_state, task_state)"
            " VALUES ($1, $2, $3, $4, $5, $6, $7::text::jsonb, 'building', 'scheduling')",
            inst_rows,
        )
        await conn.executemany(
            "INSERT INTO instance_actions (instance_id, request_id, action, project_id, user_id)"
            " VALUES ($1, $2, 'create', $3, $4)",
            action_rows,
        )
        return specs
    finally:
        await conn.close()


async def persist_hosts(dsn: str, reports: list[dict]) -> None:
    """The hosts as a scheduler persists their first reports, so the schedulers bootstrap from the DB."""
    conn = await asyncpg.connect(dsn)
    try:
        await conn.set_type_codec("jsonb", encoder=json.dumps, decoder=json.loads, schema="pg_catalog")
        for r in reports:
            await compute_nodes.upsert_from_report(conn, r)
    finally:
        await conn.close()


def start_schedulers(cloud: Cloud, n: int) -> None:
    for i in range(n):
        svc = ServiceProcess(f"scheduler{i}", "services.scheduler.cmd", cloud.config, log_dir=cloud.workdir / "logs")
        cloud.services[svc.name] = svc
        svc.start()


async def run(
    cloud: Cloud, hosts: int, schedulers: int, requests: int, seed: int, timeout: float, meter_for: Callable
) -> dict:
    """Hosts and a full queue of requests first, then the schedulers start: they bootstrap the host view from
    the DB, follow the fanout reports, and drain the queue; the rate is measured from the first decision."""
    rng = random.Random(seed)
    conf = config.parse_args(["--config-file", str(cloud.config)], prog="bench-scheduler", default_config_files=[])
    dsn = cloud.dsn
    reports = [host_report(i, rng) for i in range(hosts)]
    await persist_hosts(dsn, reports)
    specs = await insert_instances(dsn, requests, rng)

    transport = await Transport.connect(conf, service="bench-scheduler")
    ctx = RequestContext.admin()
    conductor = ConductorAPI(transport.client())
    scheduler = SchedulerAPI(transport.client())

    # The scheduler work queue, declared as its consumers declare it, so the requests wait there.
    connection = await aio_pika.connect(conf.transport_url.split(",")[0])
    channel = await connection.channel()
    exchange = await channel.declare_exchange(EXCHANGE, aio_pika.ExchangeType.TOPIC, durable=True)
    dlx = await channel.declare_exchange(DLX, aio_pika.ExchangeType.DIRECT, durable=True)
    dlq = await channel.declare_queue(dlq_name("scheduler"), durable=True, arguments={"x-queue-type": "quorum"})
    await dlq.bind(dlx, dlq_name("scheduler"))
    work = await channel.declare_queue(
        "scheduler", durable=True, arguments=work_queue_arguments("scheduler", conf.messaging.delivery_limit)
    )
    await work.bind(exchange, "scheduler")

    # Every compute host, played by one consumer of compute.* (a topic binding on the RPC exchange).
    latencies: list[float] = []
    lost = 0
    done = asyncio.Event()
    await channel.set_qos(prefetch_count=1000)
    queue = await channel.declare_queue("bench-computes", exclusive=True)
    await queue.bind(exchange, "compute.*")
    first_at = last_at = 0.0

    async def on_build(message: aio_pika.abc.AbstractIncomingMessage) -> None:
        nonlocal lost, first_at, last_at
        now = time.time()
        for req in envelope.requests_in(message.body, message.headers):  # casts to one host may travel together
            sched = req.args["request_spec"].get("scheduling") or {}
            latencies.append(now - sched.get("consumed_at", now))
            lost += sched.get("lost_races", 0)
        last_at = time.perf_counter()
        first_at = first_at or last_at
        if len(latencies) >= requests:
            done.set()

    # no_ack: this exclusive queue only feeds the measurement, and acking 5,000 deliveries took CPU from the
    # schedulers sharing these 2 cores.
    await queue.consume(on_build, no_ack=True)
    sem = asyncio.Semaphore(200)

    async def cast(item: dict) -> None:
        async with sem:
            c = RequestContext(request_id=item["request_id"], user_id=ctx.user_id, project_id=ctx.project_id,
                               roles=ctx.roles)  # fmt: skip
            await scheduler.build_instances(c, item["spec"])

    await asyncio.gather(*(cast(s) for s in specs))

    async def keep_reporting() -> None:
        while True:
            await asyncio.gather(*(conductor.report_capacity(ctx, r) for r in reports))
            await asyncio.sleep(conf.compute.report_interval)

    reporter = asyncio.create_task(keep_reporting())
    started = time.perf_counter()
    start_schedulers(cloud, schedulers)
    meter = meter_for(cloud)
    cpu_before, client_cpu = meter.sample(), time.process_time()
    db = await asyncpg.connect(dsn)
    end_deadline = time.monotonic() + timeout
    while not done.is_set() and time.monotonic() < end_deadline:
        undecided = await db.fetchval(
            "SELECT count(*) FROM instances WHERE task_state = 'scheduling' AND vm_state = 'building'"
        )
        if undecided == 0:
            break
        await asyncio.sleep(0.2)
    errors = await db.fetchval("SELECT count(*) FROM instances WHERE vm_state = 'error'")
    end = last_at if not errors else time.perf_counter()
    reporter.cancel()
    cpu = meter.since(cpu_before)
    cpu["benchmark_client"] = round(time.process_time() - client_cpu, 2)
    audit = await db.fetchrow(AUDIT)
    await connection.close()
    await transport.close()
    await db.close()
    latencies.sort()
    decided = len(latencies) + errors
    return {
        "decisions_per_s": round(decided / max(1e-9, end - first_at), 1),
        "p50_ms": round(statistics.median(latencies) * 1000, 1) if latencies else None,
        "p99_ms": round(latencies[max(0, int(len(latencies) * 0.99) - 1)] * 1000, 1) if latencies else None,
        "lost_races_per_1000": round(1000 * lost / max(1, len(latencies)), 1),
        "overcommitted_hosts": int(audit["bad"]),
        "placed": len(latencies),
        "no_host": errors,
        "allocations": int(audit["allocations"]),
        "drain_s": round(end - first_at, 2),
        "incl_scheduler_start_s": round(end - started, 2),
        # CPU seconds per component from the schedulers' start (their start-up included) to the last decision.
        "cpu_s": cpu,
        "cpu_ms_per_decision": round(cpu["total"] * 1000 / max(1, decided), 2),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--hosts", type=int, default=1000)
    ap.add_argument("--schedulers", type=int, default=3)
    ap.add_argument("--requests", type=int, default=5000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--timeout", type=float, default=600)
    ap.add_argument("--record", action="store_true", help="append the result to benchmarks/RESULTS.md")
    ap.add_argument("--keep-logs", help="copy the services' logs to this directory")
    ap.add_argument("--db-tcp", action="store_true",
                    help="schedulers reach PostgreSQL over TCP loopback, as from another machine (default: its Unix "
                    "socket, as devstack's services on the database's machine do)")  # fmt: skip
    args = ap.parse_args()
    pg, rabbit = PostgresServer(durable=True), RabbitCluster(1)
    with tempfile.TemporaryDirectory(prefix="stratus-bench-") as tmp:
        pg.start()
        try:
            rabbit.start()
            cloud = Cloud(Path(tmp), pg, rabbit, compute_hosts=0, schedulers=0,
                          extra_config={"DEFAULT": {"debug": "false"}, "compute": {"report_interval": 10},
                                        "scheduler": {"service_down_time": 60}},
                          database_socket=not args.db_tcp)  # fmt: skip
            cloud.start(timeout=120)
            try:

                def meter_for(cloud: Cloud) -> CpuMeter:
                    return CpuMeter({
                        "schedulers": [s.pid for n, s in cloud.services.items() if n.startswith("scheduler")],
                        "other_services": [s.pid for n, s in cloud.services.items() if not n.startswith("scheduler")],
                        "postgres": [pg.proc.pid if pg.proc else None],
                        "rabbitmq": [node.proc.pid for node in rabbit.nodes if node.proc],
                    })  # fmt: skip

                result = asyncio.run(
                    run(cloud, args.hosts, args.schedulers, args.requests, args.seed, args.timeout, meter_for)
                )
            finally:
                if args.keep_logs:
                    import shutil

                    shutil.copytree(Path(tmp) / "logs", args.keep_logs, dirs_exist_ok=True)
                cloud.stop()
        finally:
            rabbit.stop()
            rabbit.cleanup()
            pg.stop()
            pg.cleanup()
    result.update(hosts=args.hosts, schedulers=args.schedulers, requests=args.requests)
    result["db"] = "tcp" if args.db_tcp else "socket"
    if args.record:
        config = f"hosts={args.hosts} schedulers={args.schedulers} requests={args.requests} db={result['db']}"
        record("scheduler.py", config, result)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
