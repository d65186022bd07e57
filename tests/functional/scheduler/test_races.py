"""Parallel schedulers racing for nearly full hosts, on the real database and broker: no over-commit ever, and
every request ends placed or in ERROR with a fault that explains it (property-checked across random flavors and
capacities). The schedulers are real ``SchedulerManager``s, each with its own host view, pool and transport;
one consumer bound to ``compute.*`` plays every compute host."""

from __future__ import annotations

import asyncio
import json
import uuid

import aio_pika
import asyncpg
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from common.config import new_conf
from common.context import RequestContext
from common.db import compute_nodes
from common.db.pool import Database
from common.rpc import Transport, envelope
from common.rpc.transport import EXCHANGE
from services.compute.rpcapi import ComputeAPI
from services.scheduler.host_state import HostView
from services.scheduler.manager import SchedulerManager
from services.scheduler.rpcapi import SchedulerAPI

pytestmark = pytest.mark.functional

AUDIT = """
SELECT n.host FROM compute_nodes n LEFT JOIN (
    SELECT compute_node_id, sum(vcpus) v, sum(memory_mb) m, sum(disk_gb) d FROM allocations GROUP BY 1
) a ON a.compute_node_id = n.id
WHERE n.vcpus_used > (n.vcpus - n.reserved_host_cpus) * n.cpu_allocation_ratio
   OR n.memory_mb_used > (n.memory_mb - n.reserved_host_memory_mb) * n.ram_allocation_ratio
   OR n.local_gb_used > (n.local_gb - n.reserved_host_disk_gb) * n.disk_allocation_ratio
   OR (n.vcpus_used, n.memory_mb_used, n.local_gb_used) <> (COALESCE(a.v, 0), COALESCE(a.m, 0), COALESCE(a.d, 0))
"""


def make_conf(dsn: str, url: str, host: str):
    conf = new_conf()
    conf([], project="stratus", default_config_files=[])
    conf.set_override("transport_url", url)
    conf.set_override("host", host)
    conf.set_override("connection", dsn, "database")
    conf.set_override("max_pool_size", 8, "database")
    conf.set_override("preferred_node_check_interval", 0, "messaging")
    return conf


host_st = st.fixed_dictionaries(
    {"vcpus": st.integers(1, 8), "memory_mb": st.integers(1024, 8192), "local_gb": st.integers(5, 60)}
)
flavor_st = st.tuples(st.integers(1, 4), st.sampled_from([256, 512, 1024, 2048, 3072]), st.integers(1, 20))


@pytest.mark.parametrize("n_schedulers", [2, 3])
@settings(max_examples=4, deadline=None, suppress_health_check=list(HealthCheck), phases=[Phase.generate])
@given(hosts=st.lists(host_st, min_size=2, max_size=6), flavors=st.lists(flavor_st, min_size=10, max_size=40))
def test_parallel_schedulers_never_overcommit(stratus_db, rabbit_vhost, n_schedulers, hosts, flavors):
    asyncio.run(_race(stratus_db, rabbit_vhost.url, n_schedulers, hosts, flavors))


async def _race(dsn: str, url: str, n: int, hosts: list[dict], flavors: list[tuple]) -> None:
    conn = await asyncpg.connect(dsn)
    await conn.execute(
        "TRUNCATE instance_action_events, instance_actions, instance_faults, allocations, instances,"
        " compute_nodes, services CASCADE"
    )
    await conn.set_type_codec("jsonb", encoder=json.dumps, decoder=json.loads, schema="pg_catalog")
    for i, h in enumerate(hosts):
        await compute_nodes.upsert_from_report(
            conn, {"host": f"h{i}", **h, "cpu_allocation_ratio": 1.0, "ram_allocation_ratio": 1.0,
                   "disk_allocation_ratio": 1.0, "reserved_host_memory_mb": 0},
        )  # fmt: skip
    specs = []
    for i, (vcpus, ram, disk) in enumerate(flavors):
        iid = str(uuid.uuid4())
        flavor = {"id": "f", "name": "f", "vcpus": vcpus, "ram_mb": ram, "disk_gb": disk, "extra_specs": {}}
        await conn.execute(
            "INSERT INTO instances (id, project_id, user_id, name, hostname, flavor_id, flavor, vm_state,"
            " task_state) VALUES ($1, 'p', 'u', $2, $2, 'f', $3, 'building', 'scheduling')",
            iid, f"s{i}", flavor,
        )  # fmt: skip
        await conn.execute(
            "INSERT INTO instance_actions (instance_id, request_id, action, project_id, user_id)"
            " VALUES ($1, $2, 'create', 'p', 'u')",
            iid, f"req-{i}",
        )  # fmt: skip
        specs.append({"instance_id": iid, "project_id": "p", "flavor": flavor, "image": {}, "networks": [],
                      "availability_zone": None, "scheduler_hints": {}, "attempt": 1, "excluded_hosts": [],
                      "failures": []})  # fmt: skip

    sink = await aio_pika.connect(url)
    channel = await sink.channel()
    exchange = await channel.declare_exchange(EXCHANGE, aio_pika.ExchangeType.TOPIC, durable=True)
    queue = await channel.declare_queue("", exclusive=True)
    await queue.bind(exchange, "compute.*")
    cast_to: list[str] = []

    async def on_build(message):
        # Casts to one host may travel together (Transport.cast coalesces them): one entry per cast.
        cast_to.extend(message.routing_key for _ in envelope.requests_in(message.body, message.headers))
        await message.ack()

    await queue.consume(on_build)
    managers, closers = [], []
    try:
        for i in range(n):
            conf = make_conf(dsn, url, f"sched{i}")
            db = await Database.connect(conf)
            transport = await Transport.connect(conf, service="stratus-scheduler")
            closers += [db.close, transport.close]
            client = transport.client()
            m = SchedulerManager(conf, db, HostView(60), ComputeAPI(client), SchedulerAPI(client))
            await m.start()
            managers.append(m)
        ctx = RequestContext.admin()
        await asyncio.gather(
            *(managers[i % n].build_instances(RequestContext(request_id=f"req-{i}", roles=ctx.roles), spec)
              for i, spec in enumerate(specs))
        )  # fmt: skip
        for _ in range(50):
            if len(cast_to) >= sum(m.decisions for m in managers):
                break
            await asyncio.sleep(0.1)
        assert await conn.fetch(AUDIT) == []
        rows = await conn.fetch(
            "SELECT i.id, i.vm_state, i.task_state, i.host, f.message FROM instances i"
            " LEFT JOIN instance_faults f ON f.instance_id = i.id"
        )
        placed = [r for r in rows if r["vm_state"] == "building" and r["task_state"] == "networking"]
        failed = [r for r in rows if r["vm_state"] == "error"]
        assert len(placed) + len(failed) == len(specs), [dict(r) for r in rows if r not in placed + failed]
        assert sorted(cast_to) == sorted(f"compute.{r['host']}" for r in placed)
        for r in failed:
            assert r["message"].startswith("No valid host was found for"), r["message"]
            assert "hosts lack" in r["message"] or "every claim lost" in r["message"], r["message"]
        # A request failed only if it really fitted nowhere at the end (the cloud was full for it).
        free = await conn.fetch(
            "SELECT vcpus - vcpus_used AS v, memory_mb - memory_mb_used AS m, local_gb - local_gb_used AS d"
            " FROM compute_nodes"
        )
        by_id = {s["instance_id"]: s["flavor"] for s in specs}
        for r in failed:
            f = by_id[r["id"]]
            assert not any(h["v"] >= f["vcpus"] and h["m"] >= f["ram_mb"] and h["d"] >= f["disk_gb"] for h in free)
    finally:
        for close in closers:
            await close()
        await sink.close()
        await conn.close()
