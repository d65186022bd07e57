"""The lifecycle every RPC service shares: config, logging, transport, serve, drain on SIGTERM, exit."""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
import sys
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

import uvloop
from oslo_config import cfg

from common import config, log
from common.rpc import Transport

__all__ = ["Service", "main", "run_daemon", "settle_heap"]

T = TypeVar("T")

LOG = logging.getLogger(__name__)


class Service:
    """What a service's ``setup`` hands back: background tasks it owns and how to close its resources."""

    def __init__(self) -> None:
        self.tasks: list[asyncio.Task] = []
        self.closers: list[Callable[[], Awaitable[None]]] = []

    def spawn(self, coro: Awaitable[None], name: str) -> None:
        self.tasks.append(asyncio.create_task(coro, name=name))  # type: ignore[arg-type]

    def on_close(self, fn: Callable[[], Awaitable[None]]) -> None:
        self.closers.append(fn)


Setup = Callable[[cfg.ConfigOpts, Transport, Service], Awaitable[None]]

# CPython collects the young generation every 700 allocations of container objects; a service allocates
# thousands per request, so it collected hundreds of times a second, each time walking whatever was in flight.
GC_YOUNG_THRESHOLD = 10_000


def settle_heap() -> None:
    """Once a daemon has started: what it holds by then (modules, config, pools, a compute's libvirt connections,
    a scheduler's host view) is kept for good, so ``gc.freeze`` takes it out of the cyclic collector's sight (a
    1,000-host compute holds about 280,000 objects, and every full collection walked them all), and the young
    generation is collected every ``GC_YOUNG_THRESHOLD`` allocations. In boot.py at 1,000 hosts the API, scheduler
    and compute spent 0.47-0.57 s of CPU in the collector per 1,000 boots with CPython's defaults and 0.09 s with
    this (about 0.4 ms per boot; thread CPU time in ``gc.callbacks``, two interleaved runs each)."""
    gc.collect()  # startup's garbage is collected, not frozen
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, older, oldest)


def run_daemon(conf: cfg.ConfigOpts, main: Coroutine[Any, Any, T]) -> T:
    """Run a daemon's ``main`` to completion on the loop ``[DEFAULT] event_loop`` names (``asyncio.run``, with
    that loop). uvloop is the default: in boot.py at 1,000 hosts the API, scheduler and compute spent about 8%
    less CPU on it relative to PostgreSQL and RabbitMQ, four interleaved pairs (benchmarks/RESULTS.md)."""
    factory = uvloop.new_event_loop if conf.event_loop == "uvloop" else None
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(main)


async def run(conf: cfg.ConfigOpts, name: str, setup: Setup, drain_timeout: float = 30.0) -> None:
    transport = await Transport.connect(conf, service=name)
    service = Service()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await setup(conf, transport, service)
        settle_heap()
        LOG.info("%s started on broker node %s", name, transport.broker_node)
        await stop.wait()
        LOG.info("%s stopping: no new messages; finishing in-flight work", name)
        await transport.remove_consumers(drain_timeout)
    finally:
        await _cancel_all(service.tasks)
        await transport.close()
        for close in reversed(service.closers):
            await close()
    LOG.info("%s stopped", name)


async def _cancel_all(tasks: list[asyncio.Task], rounds: int = 3, wait: float = 2.0) -> None:
    """Cancel ``tasks`` and wait for them, cancelling again what is still running after ``wait`` seconds: Python
    3.11's ``asyncio.wait_for`` (under aio-pika's confirmed publish) swallows a cancel that lands as its inner
    future completes, and a periodic loop whose cancel was swallowed would hold the service up forever."""
    pending = set(tasks)
    for _ in range(rounds):
        if not pending:
            break
        for task in pending:
            task.cancel()
        done, pending = await asyncio.wait(pending, timeout=wait)
        for task in done:
            if not task.cancelled() and task.exception() is not None:
                LOG.warning("task %s ended with %r", task.get_name(), task.exception())
    if pending:
        LOG.warning("tasks still running at exit: %s", ", ".join(sorted(t.get_name() for t in pending)))


def main(name: str, setup: Setup) -> None:
    """Console-script body: ``stratus-<x> --config-file ...``."""
    conf = config.parse_args(sys.argv[1:], prog=name)
    log.setup(conf, name)
    run_daemon(conf, run(conf, name, setup))
