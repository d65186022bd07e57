"""Shared fixtures for every test tier. All backing services are private, on free ports, in temp dirs.

Fixtures (all lazy: a server starts only when a test asks for it):

=====================  =========  ==========================================================================
``postgres``           session    :class:`PostgresServer`; ``.dsn``, ``.dsn_for(db)``, ``.restart()``
``pg_database``        function   DSN of a fresh, empty database (dropped afterwards)
``stratus_db``         function   DSN of a fresh database with Stratus' schema (copy of a migrated template)
``rabbit``             session    one-node :class:`RabbitCluster`; ``.transport_url``, ``.urls``
``rabbit_vhost``       module     :class:`Vhost` on ``rabbit``: ``.name``, ``.url``, ``.transport_url``
``rabbit_cluster``     session    three-node :class:`RabbitCluster`; ``.kill(i)``, ``.start_node(i)``
``services``           function   :class:`ServiceGroup` for real service subprocesses, logs in tmp_path
``libvirtd``           session    :class:`SystemLibvirtd` (qemu:///system answers; stops what it started)
=====================  =========  ==========================================================================

Every test also gets a guard that cancels asyncio tasks it left running and reports them as a warning
(set ``STRATUS_FAIL_ON_LEAKED_TASKS=1`` to make that an error; mark a test ``allow_leaked_tasks`` to skip).
When a test fails, the last lines of every live service's log are added to its report.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import re
import secrets
import signal
import subprocess
import sys
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import pytest_asyncio

from tests.fixtures._common import REAPER, FixtureError
from tests.fixtures.libvirtd import (
    TEST_DOMAIN_PREFIX,
    SystemLibvirtd,
    cleanup_domains,
    cleanup_orphaned_test_domains,
    ensure_system_libvirtd,
)
from tests.fixtures.postgres import PostgresServer
from tests.fixtures.processes import LIVE_PROCESSES, REPO_ROOT, ServiceGroup, write_config
from tests.fixtures.rabbitmq import RabbitCluster

LOG_TAIL_LINES = int(os.environ.get("STRATUS_TEST_LOG_LINES", "60"))
TIMINGS: list[str] = []  # printed in the terminal summary


class LeakedTaskWarning(UserWarning):
    """A test left asyncio tasks running; they were cancelled."""


@dataclass(frozen=True)
class Vhost:
    name: str
    url: str  # one node
    transport_url: str  # comma form, all nodes of the cluster it lives on


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"received signal {signum}")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "allow_leaked_tasks: do not report asyncio tasks the test leaves behind")
    # SIGTERM/SIGHUP would kill pytest without running fixture finalizers; as KeyboardInterrupt they do run.
    for sig in (signal.SIGTERM, signal.SIGHUP):
        if signal.getsignal(sig) is signal.SIG_DFL:
            signal.signal(sig, _interrupt)


def pytest_unconfigure(config: pytest.Config) -> None:
    REAPER.reap_all()


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterator[pytest.TestReport]:
    report = yield
    setattr(item, f"rep_{report.when}", report)  # item.rep_setup / rep_call / rep_teardown
    if report.failed and report.when in ("setup", "call"):
        for proc in LIVE_PROCESSES:
            header = f"{proc.name} log, last {LOG_TAIL_LINES} lines ({proc.log_file})"
            report.sections.append((header, proc.tail(LOG_TAIL_LINES)))
    return report


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if TIMINGS:
        terminalreporter.write_sep("-", "stratus fixture timings")
        for line in TIMINGS:
            terminalreporter.write_line(line)


# -- asyncio hygiene ------------------------------------------------------------------------------------------
async def _cancel_leftovers(before: set[asyncio.Task], grace: float) -> list[str]:
    current = asyncio.current_task()
    leaked = [t for t in asyncio.all_tasks() - before if t is not current and not t.done()]
    if not leaked:
        return []
    _, pending = await asyncio.wait(leaked, timeout=grace)
    if not pending:
        return []
    for task in pending:
        task.cancel()
    await asyncio.wait(pending, timeout=5)
    return [repr(task) for task in pending]


@pytest_asyncio.fixture(autouse=True)
async def _leaked_task_guard(request: pytest.FixtureRequest):
    if request.node.get_closest_marker("allow_leaked_tasks"):
        yield
        return
    before = set(asyncio.all_tasks())
    yield
    leaked = await _cancel_leftovers(before, grace=0.2)
    if leaked:
        message = f"{request.node.nodeid} left {len(leaked)} asyncio task(s) running (cancelled): " + "; ".join(leaked)
        if os.environ.get("STRATUS_FAIL_ON_LEAKED_TASKS") == "1":
            pytest.fail(message)
        warnings.warn(LeakedTaskWarning(message), stacklevel=1)


@pytest_asyncio.fixture(scope="session", autouse=True)
async def _session_task_guard():
    before = set(asyncio.all_tasks())
    yield
    leaked = await _cancel_leftovers(before, grace=0.5)
    if leaked:
        warnings.warn(LeakedTaskWarning(f"tasks still running at session end (cancelled): {leaked}"), stacklevel=1)


# -- PostgreSQL -----------------------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    server = PostgresServer()
    try:
        server.start()
        TIMINGS.append(
            f"postgres: started in {server.startup_seconds:.2f}s (initdb {server.initdb_seconds:.2f}s), {server.dsn}"
        )
        yield server
    finally:
        server.cleanup()


@pytest.fixture
def pg_database(postgres: PostgresServer) -> Iterator[str]:
    name = f"t_{secrets.token_hex(6)}"
    dsn = postgres.create_database(name)
    try:
        yield dsn
    finally:
        if postgres.running:
            postgres.drop_database(name)


@pytest.fixture(scope="session")
def stratus_db_template(postgres: PostgresServer, tmp_path_factory: pytest.TempPathFactory) -> str:
    """Name of a template database migrated once per session with ``stratus-manage db sync``."""
    if importlib.util.find_spec("common.cmd.manage") is None:
        pytest.skip("common.cmd.manage (stratus-manage) is not written yet")
    conf_dir = tmp_path_factory.mktemp("manage")

    def migrate(dsn: str) -> None:
        conf = write_config(conf_dir / "manage.conf", {"database": {"connection": dsn}})
        result = subprocess.run(
            [sys.executable, "-m", "common.cmd.manage", "--config-file", str(conf), "db", "sync"],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=120,
        )
        if result.returncode != 0:
            raise FixtureError(f"stratus-manage db sync failed:\n{result.stdout}\n{result.stderr}")

    t0 = time.monotonic()
    postgres.create_template("stratus_template", migrate)
    TIMINGS.append(f"stratus_db_template: migrated in {time.monotonic() - t0:.2f}s")
    return "stratus_template"


@pytest.fixture
def stratus_db(postgres: PostgresServer, stratus_db_template: str) -> Iterator[str]:
    """DSN of a private database holding the current Stratus schema (~0.05-0.15 s to copy)."""
    name = f"s_{secrets.token_hex(6)}"
    dsn = postgres.create_database(name, template=stratus_db_template)
    try:
        yield dsn
    finally:
        if postgres.running:
            postgres.drop_database(name)


# -- RabbitMQ -------------------------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def rabbit() -> Iterator[RabbitCluster]:
    cluster = RabbitCluster(1)
    try:
        cluster.start()
        TIMINGS.append(f"rabbit (1 node): started in {cluster.startup_seconds:.2f}s, {cluster.transport_url}")
        yield cluster
    finally:
        cluster.cleanup()


def _vhost_name(request: pytest.FixtureRequest) -> str:
    base = re.sub(r"[^A-Za-z0-9]+", "-", request.node.name.rsplit("/", 1)[-1].removesuffix(".py"))[:40]
    return f"t-{base}-{secrets.token_hex(3)}"


@pytest.fixture(scope="module")
def rabbit_vhost(rabbit: RabbitCluster, request: pytest.FixtureRequest) -> Iterator[Vhost]:
    """A fresh vhost per test module on the session's single node (guest has full rights); deleted after."""
    name = _vhost_name(request)
    t0 = time.monotonic()
    rabbit.add_vhost(name)
    TIMINGS.append(f"rabbit_vhost {name}: created in {time.monotonic() - t0:.2f}s")
    try:
        yield Vhost(name, rabbit.url(0, name), rabbit.transport_url_for(name))
    finally:
        if any(node.running for node in rabbit.nodes):
            rabbit.delete_vhost(name)


@pytest.fixture(scope="session")
def rabbit_cluster() -> Iterator[RabbitCluster]:
    """Three clustered nodes; tests that kill nodes must start them again (``start_node``) before ending."""
    cluster = RabbitCluster(3)
    try:
        cluster.start()
        TIMINGS.append(f"rabbit_cluster (3 nodes): formed in {cluster.startup_seconds:.2f}s, {cluster.transport_url}")
        yield cluster
    finally:
        cluster.cleanup()


# -- services and libvirt ---------------------------------------------------------------------------------------
@pytest.fixture
def services(tmp_path) -> Iterator[ServiceGroup]:
    group = ServiceGroup(tmp_path / "logs")
    try:
        yield group
    finally:
        group.close()


@pytest.fixture(scope="session")
def libvirtd() -> Iterator[SystemLibvirtd]:
    handle = ensure_system_libvirtd()
    stale = cleanup_orphaned_test_domains()  # left by an earlier run that was killed or lost libvirtd
    if stale:
        TIMINGS.append(f"libvirtd: removed {len(stale)} orphaned test domain(s) of earlier runs")
    if handle.started:
        TIMINGS.append(f"libvirtd: started {handle.started} for this session")
    try:
        yield handle
    finally:
        left = cleanup_domains(TEST_DOMAIN_PREFIX) + cleanup_orphaned_test_domains()
        if left:
            warnings.warn(f"tests left libvirt domains behind (destroyed): {left}", stacklevel=1)
        handle.stop()
