"""One highly available cloud for the whole chaos session, and the invariants every scenario must keep.

The cloud: a three-node RabbitMQ cluster (clients spread with failover_strategy=roundrobin), two API nodes
behind a real HAProxy rendered from etc/haproxy, two schedulers, the network service and one compute process
simulating four hosts on libvirt test:///default. Scenarios run in file order on it and each leaves it healthy.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import asyncpg
import pytest

from tests.fixtures.cloud import Cloud

HOSTS = 4
REPORTS: list[str] = []  # per-scenario figures, printed at the end of the session


@pytest.fixture(scope="session")
def ha_cloud(postgres, rabbit_cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cloud]:
    # Under pytest's basetemp, so the services' logs outlive the session (pytest keeps the last three).
    workdir = tmp_path_factory.mktemp("chaos")
    cloud = Cloud(
        workdir, postgres, rabbit_cluster, compute_hosts=HOSTS, schedulers=2, api_nodes=2,
        subnet_cidr="10.96.0.0/20",  # ~500 boots in the session: more than a /24 holds
        compute_overrides={"vcpus": 32, "memory_mb": 65536, "local_gb": 1000},
        extra_config={
            "DEFAULT": {"debug": "false"},
            "messaging": {"failover_strategy": "roundrobin", "preferred_node_check_interval": 5,
                          "rpc_timeout": 20, "reconnect_timeout": 30},
            "database": {"retry_timeout": 30},
            "api": {"drain_seconds": 1.5},
        },
    )  # fmt: skip
    cloud.start(timeout=120)
    try:
        yield cloud
    finally:
        cloud.stop()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if REPORTS:
        terminalreporter.write_sep("-", "chaos scenarios")
        for line in REPORTS:
            terminalreporter.write_line(line)


async def wait_settled(dsn: str, ids: list[str], bound: float) -> tuple[float, dict[str, int]]:
    """Wait until every id is ACTIVE or ERROR; returns (seconds waited, count per vm_state). Fails on a lost
    (never inserted) or stuck instance, and on an ERROR without a fault."""
    conn = await asyncpg.connect(dsn)
    t0 = time.monotonic()
    try:
        while True:
            rows = await conn.fetch("SELECT id, vm_state, task_state FROM instances WHERE id = ANY($1)", ids)
            states = {r["id"]: r["vm_state"] for r in rows}
            assert set(ids) <= set(states), f"accepted boots lost: {set(ids) - set(states)}"
            stuck = {i: s for i, s in states.items() if s not in ("active", "error")}
            if not stuck:
                break
            if time.monotonic() - t0 > bound:
                raise AssertionError(f"{len(stuck)} accepted boots still not ACTIVE/ERROR after {bound}s: {stuck}")
            await asyncio.sleep(0.25)
        faultless = await conn.fetch(
            "SELECT i.id FROM instances i WHERE i.id = ANY($1) AND i.vm_state = 'error'"
            " AND NOT EXISTS (SELECT 1 FROM instance_faults f WHERE f.instance_id = i.id)",
            ids,
        )
        assert not faultless, f"ERROR without a fault: {[r['id'] for r in faultless]}"
        counts: dict[str, int] = {}
        for s in states.values():
            counts[s] = counts.get(s, 0) + 1
        return time.monotonic() - t0, counts
    finally:
        await conn.close()


async def error_faults(dsn: str, ids: list[str]) -> list[str]:
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(
            "SELECT DISTINCT ON (instance_id) message FROM instance_faults WHERE instance_id = ANY($1)"
            " ORDER BY instance_id, id DESC",
            ids,
        )
        return [r["message"] for r in rows]
    finally:
        await conn.close()


async def check_capacity(dsn: str) -> None:
    """No host over-claimed: used = sum of allocations, and within capacity × ratio for each resource."""
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(
            "SELECT n.host, n.vcpus_used, n.memory_mb_used, n.local_gb_used,"
            " (n.vcpus - n.reserved_host_cpus) * n.cpu_allocation_ratio AS cpu_limit,"
            " (n.memory_mb - n.reserved_host_memory_mb) * n.ram_allocation_ratio AS ram_limit,"
            " (n.local_gb - n.reserved_host_disk_gb) * n.disk_allocation_ratio AS disk_limit,"
            " COALESCE(SUM(a.vcpus), 0) AS v, COALESCE(SUM(a.memory_mb), 0) AS m, COALESCE(SUM(a.disk_gb), 0) AS d"
            " FROM compute_nodes n LEFT JOIN allocations a ON a.compute_node_id = n.id GROUP BY n.id"
        )
        for r in rows:
            assert (r["vcpus_used"], r["memory_mb_used"], r["local_gb_used"]) == (r["v"], r["m"], r["d"]), dict(r)
            assert r["vcpus_used"] <= r["cpu_limit"], dict(r)
            assert r["memory_mb_used"] <= r["ram_limit"], dict(r)
            assert r["local_gb_used"] <= r["disk_limit"], dict(r)
        double = await conn.fetch(
            "SELECT a.instance_id FROM allocations a JOIN instances i ON i.id = a.instance_id"
            " WHERE i.vm_state = 'error' AND i.deleted_at IS NULL AND i.host IS NULL"
        )
        assert not double, f"claims left behind by instances that never landed: {double}"
    finally:
        await conn.close()


async def check_domains(dsn: str, *, exact: bool = True, bound: float = 15.0) -> None:
    """No duplicate domains: no host reports more guests than it has ACTIVE instances (a guest of an instance
    placed elsewhere would be a duplicate); with ``exact`` (no compute restart happened) exactly as many.

    After a compute restart the test driver's in-memory domains are gone, so only ``<=`` holds then. Reports
    come every 2 s, so this waits for a fresh one."""
    conn = await asyncpg.connect(dsn)
    t0 = time.monotonic()
    try:
        while True:
            rows = await conn.fetch(
                "SELECT n.host, n.running_vms, (SELECT count(*) FROM instances i WHERE i.host = n.host"
                " AND i.vm_state = 'active' AND i.deleted_at IS NULL) AS active FROM compute_nodes n ORDER BY n.host"
            )
            bad = [
                dict(r) for r in rows if r["running_vms"] > r["active"] or (exact and r["running_vms"] != r["active"])
            ]
            if not bad:
                return
            if time.monotonic() - t0 > bound:
                raise AssertionError(f"hosts whose guests do not match their ACTIVE instances: {bad}")
            await asyncio.sleep(0.5)
    finally:
        await conn.close()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "chaos: faults injected under load on the HA cloud (tox -e chaos)")
