"""The report persister (services/scheduler/leader.py) with two real scheduler processes on a real broker and
database: every scheduler hears every capacity report, only the holder of the advisory lock writes them, and when
the holder is killed with SIGKILL the other one takes the lock and the reports keep reaching the database.

Who wrote a row is told by the database itself: a statement trigger on ``compute_nodes`` notes the client port of
every writing session, and each scheduler process owns its connections' ports.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import asyncpg
import psutil
import pytest

from common.config import new_conf
from common.context import RequestContext
from common.rpc import Transport
from services.scheduler.leader import _KEY
from services.scheduler.rpcapi import ConductorAPI
from tests.fixtures.processes import ServiceGroup, ServiceProcess, write_config

pytestmark = pytest.mark.functional

TAKEOVER_BOUND = 5.0  # seconds from SIGKILL to the next report in the database (lock retried every 0.5 s)

WRITERS = """
CREATE TABLE report_writers (port integer, at timestamptz NOT NULL DEFAULT clock_timestamp());
CREATE FUNCTION note_report_writer() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO report_writers (port) VALUES (inet_client_port());
    RETURN NULL;
END $$;
CREATE TRIGGER note_report_writer AFTER INSERT OR UPDATE ON compute_nodes
    FOR EACH STATEMENT EXECUTE FUNCTION note_report_writer();
"""

# A bigint advisory lock shows in pg_locks as (classid, objid) = (high, low) 32 bits, objsubid 1.
HOLDER = """
SELECT s.client_port FROM pg_locks l JOIN pg_stat_activity s ON s.pid = l.pid
WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1 AND l.classid = $1 AND l.objid = $2
"""


def ports_of(proc: ServiceProcess) -> set[int]:
    return {c.laddr.port for c in psutil.Process(proc.pid).net_connections(kind="tcp") if c.laddr}


async def holder_port(db: asyncpg.Connection) -> int | None:
    rows = await db.fetch(HOLDER, _KEY >> 32, _KEY & 0xFFFFFFFF)
    assert len(rows) <= 1, rows
    return rows[0]["client_port"] if rows else None


async def wait_until(predicate, timeout: float, what: str) -> float:
    """Seconds it took ``predicate()`` (async) to be true; fails after ``timeout``."""
    started = time.monotonic()
    while not await predicate():
        assert time.monotonic() - started < timeout, f"{what}: not within {timeout}s"
        await asyncio.sleep(0.05)
    return time.monotonic() - started


async def test_one_scheduler_persists_reports_and_another_takes_over_when_it_is_killed(
    stratus_db, rabbit_vhost, services: ServiceGroup, tmp_path: Path
):
    db = await asyncpg.connect(stratus_db)
    await db.execute(WRITERS)
    schedulers = []
    for name in ("sched-a", "sched-b"):
        conf = write_config(tmp_path / f"{name}.conf", {
            "DEFAULT": {"host": name, "transport_url": rabbit_vhost.transport_url, "state_path": tmp_path,
                        "debug": "true"},
            "database": {"connection": stratus_db, "max_pool_size": 4},
            "compute": {"report_interval": 1},
        })  # fmt: skip
        schedulers.append(services.start(name, conf, module="scheduler"))
    for proc in schedulers:
        await proc.await_log("stratus-scheduler started on broker node", timeout=30)

    conf = new_conf()
    conf([], project="stratus", default_config_files=[])
    conf.set_override("transport_url", rabbit_vhost.transport_url)
    conf.set_override("host", "reporter")
    transport = await Transport.connect(conf, service="reporter")
    conductor = ConductorAPI(transport.client())
    vcpus = 8
    # Stopped by an event, not cancel(): Python 3.11's asyncio.wait_for (under aio-pika's publish) can swallow a
    # cancel that lands as the confirm arrives, and a swallowed cancel here loops forever.
    stop = asyncio.Event()

    async def report() -> None:  # a compute host reporting; its vCPUs are whatever the test says now
        while not stop.is_set():
            await conductor.report_capacity(
                RequestContext.admin(),
                {"host": "h1", "vcpus": vcpus, "memory_mb": 4096, "local_gb": 50, "running_vms": 0,
                 "cpu_allocation_ratio": 1.0, "ram_allocation_ratio": 1.0, "reserved_host_memory_mb": 0},
            )  # fmt: skip
            await asyncio.sleep(0.1)

    async def persisted(n: int) -> bool:
        return await db.fetchval("SELECT vcpus FROM compute_nodes WHERE host = 'h1'") == n

    reporter = asyncio.create_task(report())
    try:
        await wait_until(lambda: persisted(8), 10, "the first report persisted")
        port = await holder_port(db)
        (holder,) = [p for p in schedulers if port in ports_of(p)]
        (other,) = [p for p in schedulers if p is not holder]

        # Reports that change: each is persisted, by the holder only, though both schedulers hear every one.
        since = await db.fetchval("SELECT clock_timestamp()")
        for vcpus in range(9, 14):
            await wait_until(lambda: persisted(vcpus), 5, f"report of {vcpus} vCPUs persisted")  # noqa: B023
        writers = {r["port"] for r in await db.fetch("SELECT port FROM report_writers WHERE at > $1", since)}
        assert writers and writers <= ports_of(holder), (writers, ports_of(holder), ports_of(other))
        assert not writers & ports_of(other)

        holder.kill()  # SIGKILL: its session, and the lock with it, go when PostgreSQL sees the socket close
        killed = await db.fetchval("SELECT clock_timestamp()")
        vcpus = 32
        took = await wait_until(lambda: persisted(32), TAKEOVER_BOUND, "a report persisted after the kill")
        assert await holder_port(db) in ports_of(other)
        writers = {r["port"] for r in await db.fetch("SELECT port FROM report_writers WHERE at > $1", killed)}
        assert writers and writers <= ports_of(other), (writers, ports_of(other))
        print(f"reports persisted again {took:.2f}s after the holder was killed")
    finally:
        stop.set()
        await asyncio.wait_for(reporter, 15)
        await transport.close()
        await db.close()
