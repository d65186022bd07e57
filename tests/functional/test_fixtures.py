"""Self-tests of tests/fixtures: each backing service starts, works, restarts and leaves no process behind."""

from __future__ import annotations

import asyncio
import os
import time

import aio_pika
import asyncpg
import pytest

from tests.fixtures._common import group_members
from tests.fixtures.libvirtd import cleanup_domains, ensure_system_libvirtd, libvirtd_answers
from tests.fixtures.postgres import PostgresServer
from tests.fixtures.processes import ServiceGroup, ServiceProcess, write_config
from tests.fixtures.rabbitmq import RabbitCluster

pytestmark = pytest.mark.functional


def _pids_mentioning(text: str) -> list[int]:
    """Pids of live (non-zombie) processes whose command line contains ``text``."""
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry.name}/cmdline", "rb") as fh:
                cmdline = fh.read().replace(b"\0", b" ").decode(errors="replace")
            with open(f"/proc/{entry.name}/stat") as fh:
                state = fh.read().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if text in cmdline and state not in ("Z", "X"):
            found.append(int(entry.name))
    return found


def _pid_alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except OSError:
        return False


def _assert_nothing_left(path: str) -> None:
    """No live process mentions ``path`` and the directory is gone."""
    assert _pids_mentioning(path) == []
    assert not os.path.exists(path)


# -- PostgreSQL -----------------------------------------------------------------------------------------------
async def test_postgres_start_query_restart_stop() -> None:
    server = PostgresServer()
    try:
        server.start()
        data_dir = str(server.data_dir)
        assert server.startup_seconds < 30
        conn = await asyncpg.connect(server.dsn)
        assert await conn.fetchval("SELECT current_database()") == "stratus"
        await conn.execute("CREATE TABLE kept (x int); INSERT INTO kept VALUES (42)")
        await conn.close()

        port, pid = server.port, server.pid
        t0 = time.monotonic()
        server.restart()
        restart_s = time.monotonic() - t0
        assert server.port == port and server.pid != pid
        conn = await asyncpg.connect(server.dsn)
        assert await conn.fetchval("SELECT x FROM kept") == 42  # same data dir
        await conn.close()

        server.kill()  # crash; start() recovers
        assert not group_members(pid)
        server.start()
        conn = await asyncpg.connect(server.dsn)
        assert await conn.fetchval("SELECT count(*) FROM kept") == 1
        await conn.close()
        print(f"postgres start {server.startup_seconds:.2f}s restart {restart_s:.2f}s")
    finally:
        server.cleanup()
    _assert_nothing_left(data_dir)


async def test_a_benchmark_postgres_is_durable_as_devstack_makes_it_and_a_test_one_is_not(
    postgres: PostgresServer,
) -> None:
    settings = (
        "SELECT current_setting('fsync'), current_setting('full_page_writes'), current_setting('synchronous_commit')"
    )
    conn = await asyncpg.connect(postgres.dsn)
    try:
        assert tuple(await conn.fetchrow(settings)) == ("off", "off", "off")
    finally:
        await conn.close()
    server = PostgresServer(durable=True)
    try:
        server.start()
        data_dir = str(server.data_dir)
        conn = await asyncpg.connect(server.dsn)
        try:
            assert tuple(await conn.fetchrow(settings)) == ("on", "on", "off")
        finally:
            await conn.close()
    finally:
        server.cleanup()
    _assert_nothing_left(data_dir)


async def test_postgres_template_copies(postgres: PostgresServer) -> None:
    async def apply(dsn: str) -> None:
        conn = await asyncpg.connect(dsn)
        await conn.execute(
            "CREATE TABLE things (id serial PRIMARY KEY, name text); INSERT INTO things (name) VALUES ('a')"
        )
        await conn.close()

    postgres.create_template("selftest_tmpl", apply)
    timings = []
    dsns = []
    for _ in range(3):
        t0 = time.monotonic()
        dsns.append(postgres.new_database(template="selftest_tmpl"))
        timings.append(time.monotonic() - t0)
    conn = await asyncpg.connect(dsns[0])
    await conn.execute("INSERT INTO things (name) VALUES ('b')")
    await conn.close()
    conn = await asyncpg.connect(dsns[1])
    assert await conn.fetchval("SELECT count(*) FROM things") == 1  # isolated copies
    await conn.close()
    for dsn in dsns:
        postgres.drop_database(dsn.rsplit("/", 1)[1])
    print("database from template: " + ", ".join(f"{t:.3f}s" for t in timings))


async def test_pg_database_is_fresh(pg_database: str) -> None:
    conn = await asyncpg.connect(pg_database)
    tables = await conn.fetchval("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'")
    await conn.close()
    assert tables == 0


# -- RabbitMQ -------------------------------------------------------------------------------------------------
async def test_rabbit_single_node_publish_consume(rabbit: RabbitCluster, rabbit_vhost) -> None:
    assert rabbit.transport_url == f"amqp://guest:guest@127.0.0.1:{rabbit.nodes[0].amqp_port}/"
    assert rabbit_vhost.transport_url.endswith(f"/{rabbit_vhost.name}")
    connection = await aio_pika.connect(rabbit_vhost.url)
    try:
        channel = await connection.channel(publisher_confirms=True)
        queue = await channel.declare_queue("selftest", durable=True, arguments={"x-queue-type": "quorum"})
        for i in range(5):
            await channel.default_exchange.publish(aio_pika.Message(f"m{i}".encode()), routing_key="selftest")
        got = []
        async with queue.iterator() as it:
            async for message in it:
                async with message.process():
                    got.append(message.body.decode())
                if len(got) == 5:
                    break
        assert got == [f"m{i}" for i in range(5)]
    finally:
        await connection.close()


def test_vhost_cost(rabbit: RabbitCluster) -> None:
    t0 = time.monotonic()
    rabbit.add_vhost("selftest-cost")
    added = time.monotonic() - t0
    t0 = time.monotonic()
    rabbit.delete_vhost("selftest-cost")
    deleted = time.monotonic() - t0
    print(f"vhost add+permissions {added:.2f}s, delete {deleted:.2f}s")
    assert added < 30


async def _publish(url: str, queue: str, bodies: list[str]) -> None:
    connection = await aio_pika.connect(url)
    try:
        channel = await connection.channel(publisher_confirms=True)
        await channel.declare_queue(queue, durable=True, arguments={"x-queue-type": "quorum"})
        for body in bodies:
            await channel.default_exchange.publish(
                aio_pika.Message(body.encode(), delivery_mode=aio_pika.DeliveryMode.PERSISTENT), routing_key=queue
            )
    finally:
        await connection.close()


async def _drain(url: str, queue: str) -> list[str]:
    connection = await aio_pika.connect(url)
    try:
        channel = await connection.channel()
        q = await channel.declare_queue(queue, durable=True, arguments={"x-queue-type": "quorum"})
        bodies = []
        while (message := await q.get(fail=False, timeout=10)) is not None:
            await message.ack()
            bodies.append(message.body.decode())
        return bodies
    finally:
        await connection.close()


@pytest.mark.timeout(400)
async def test_rabbit_cluster_kill_and_rejoin(rabbit_cluster: RabbitCluster) -> None:
    cluster = rabbit_cluster
    names = sorted(node.name for node in cluster.nodes)
    assert cluster.running_nodes() == names
    hosts = ",".join(f"127.0.0.1:{node.amqp_port}" for node in cluster.nodes)
    assert cluster.transport_url == f"amqp://guest:guest@{hosts}/"

    await _publish(cluster.urls[0], "selftest-qq", [f"a{i}" for i in range(10)])

    victim = cluster.nodes[1]
    beam = victim.beam_pid()
    t0 = time.monotonic()
    cluster.kill(1)
    kill_s = time.monotonic() - t0
    assert not _pid_alive(beam)
    assert cluster.running_nodes(via=0) == sorted(n for n in names if n != victim.name)

    # 2 of 3 members: the quorum queue still takes confirmed publishes.
    await _publish(cluster.urls[2], "selftest-qq", [f"b{i}" for i in range(10)])

    rejoin_s = await asyncio.to_thread(cluster.start_node, 1)
    assert cluster.running_nodes(via=1) == names
    assert rejoin_s < 90

    bodies = await _drain(cluster.urls[1], "selftest-qq")
    assert bodies == [f"a{i}" for i in range(10)] + [f"b{i}" for i in range(10)]
    print(f"cluster formed {cluster.startup_seconds:.2f}s, kill {kill_s:.2f}s, restart+rejoin {rejoin_s:.2f}s")


@pytest.mark.timeout(120)
def test_rabbit_single_node_stop_leaves_nothing() -> None:
    cluster = RabbitCluster(1)
    try:
        cluster.start()
        base = str(cluster.base_dir)
        epmd_port = cluster.epmd_port
        assert _pids_mentioning(base)
        print(f"one node started in {cluster.startup_seconds:.2f}s")
    finally:
        t0 = time.monotonic()
        cluster.cleanup()
    print(f"cleanup {time.monotonic() - t0:.2f}s")
    _assert_nothing_left(base)
    assert _pids_mentioning(f"-port {epmd_port}") == []


# -- service processes ------------------------------------------------------------------------------------------
def test_service_process_lifecycle(tmp_path) -> None:
    conf = write_config(tmp_path / "svc.conf", {"DEFAULT": {"debug": True}})
    proc = ServiceProcess("sleeper", "tests.fixtures._sleeper", conf, log_dir=tmp_path)
    try:
        proc.start()
        match = proc.wait_for_log(r"ready config=(\S+)", timeout=20)
        assert match.group(1) == str(conf)
        child = int(proc.wait_for_log(r"child pid (\d+)").group(1))
        assert proc.stop() == 0  # exits on SIGTERM
        assert "stopping on SIGTERM" in proc.read_log()
        assert not _pid_alive(child)  # the group kill took the child too

        proc.start()  # restart appends to the same log, waits only on new lines
        proc.wait_for_log(r"ready", timeout=20)
        child = int(proc.wait_for_log(r"child pid (\d+)").group(1))
        proc.kill()
        assert proc.returncode == -9 and not _pid_alive(child)
        assert proc.read_log(since_start=False).count("ready config") == 2
    finally:
        proc.close()


def test_service_process_escalates_to_sigkill(tmp_path) -> None:
    group = ServiceGroup(tmp_path)
    try:
        proc = group.start("stubborn", None, module="tests.fixtures._sleeper", args=["--ignore-term"])
        proc.wait_for_log("ready", timeout=20)
        t0 = time.monotonic()
        assert proc.stop(timeout=1) == -9
        assert 0.9 < time.monotonic() - t0 < 10
    finally:
        group.close()


async def test_service_process_await_log_reports_death(services: ServiceGroup) -> None:
    proc = services.start("dies", None, module="tests.fixtures._no_such_module")
    with pytest.raises(Exception, match="exited with 1"):
        await proc.await_log("never printed", timeout=20)
    assert "No module named" in proc.tail()


def test_write_config_round_trip(tmp_path) -> None:
    from common.config import parse_args

    path = write_config(
        tmp_path / "stratus.conf",
        {
            "DEFAULT": {"transport_url": "amqp://guest:pa$$@127.0.0.1:1,127.0.0.1:2/v", "debug": True},
            "database": {"connection": "postgresql://postgres@127.0.0.1:5/db", "max_pool_size": 3},
            "compute": {"instances_path": None},
        },
    )
    conf = parse_args(["--config-file", str(path)], prog="selftest", default_config_files=[])
    assert conf.transport_url == "amqp://guest:pa$$@127.0.0.1:1,127.0.0.1:2/v"
    assert conf.debug is True
    assert conf.database.max_pool_size == 3
    assert conf.compute.instances_path is None


# -- libvirt (only when asked: -m integration) ------------------------------------------------------------------
@pytest.mark.integration
def test_system_libvirtd() -> None:
    handle = ensure_system_libvirtd()
    started = list(handle.started)
    try:
        assert libvirtd_answers()
        assert cleanup_domains() == []
    finally:
        handle.stop()
    if started:
        assert not libvirtd_answers(timeout=5)
