"""The service lifecycle: the loop a daemon runs on, the heap settled after start, and shutdown cancelling its
periodic tasks even when a cancel is swallowed (Python 3.11's ``wait_for`` can)."""

from __future__ import annotations

import asyncio
import logging

from common import config, service
from common.service import _cancel_all


async def swallows_first_cancel(seen: list[str]) -> None:
    try:
        await asyncio.sleep(3600)
    except asyncio.CancelledError:
        seen.append("swallowed")  # as wait_for does when its inner future completes at the same moment
    await asyncio.sleep(3600)


async def ignores_cancel(release: asyncio.Event) -> None:
    while not release.is_set():
        try:
            await release.wait()
        except asyncio.CancelledError:
            pass


async def test_a_swallowed_cancel_is_cancelled_again():
    seen: list[str] = []
    polite = asyncio.create_task(asyncio.sleep(3600), name="polite")
    stubborn = asyncio.create_task(swallows_first_cancel(seen), name="stubborn")
    await asyncio.sleep(0)
    await _cancel_all([polite, stubborn], wait=0.05)
    assert seen == ["swallowed"]
    assert polite.cancelled() and stubborn.cancelled()


async def test_a_task_that_never_stops_is_named_and_does_not_hold_shutdown(caplog):
    release = asyncio.Event()
    task = asyncio.create_task(ignores_cancel(release), name="report-h1")
    await asyncio.sleep(0)
    with caplog.at_level(logging.WARNING, logger="common.service"):
        await asyncio.wait_for(_cancel_all([task], rounds=3, wait=0.05), 5)
    assert not task.done()
    assert "tasks still running at exit: report-h1" in caplog.text
    release.set()
    await task


def test_a_started_daemon_freezes_what_it_holds_and_collects_the_young_generation_less_often():
    import gc

    before = gc.get_threshold()
    gc.unfreeze()
    assert gc.get_freeze_count() == 0
    try:
        service.settle_heap()
        assert gc.get_freeze_count() > 0
        assert gc.get_threshold() == (service.GC_YOUNG_THRESHOLD, before[1], before[2])
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)


def _loop_kind() -> str:
    return type(asyncio.get_running_loop()).__module__.split(".")[0]


async def _loop_kind_after(value: int) -> tuple[str, int]:
    await asyncio.sleep(0)
    return _loop_kind(), value


def test_a_daemon_runs_on_the_loop_its_config_names():
    conf = config.new_conf()
    conf([], project="stratus")
    assert conf.event_loop == "uvloop"  # the default
    assert service.run_daemon(conf, _loop_kind_after(1)) == ("uvloop", 1)
    conf.set_override("event_loop", "asyncio")
    assert service.run_daemon(conf, _loop_kind_after(2)) == ("asyncio", 2)
