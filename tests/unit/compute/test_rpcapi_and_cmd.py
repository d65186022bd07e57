import asyncio
from dataclasses import dataclass, field
from typing import Any

import pytest

from common.context import RequestContext
from services.compute import cmd
from services.compute.exceptions import BridgeUnavailable
from services.compute.rpcapi import ComputeAPI
from services.compute.virt.libvirt import vif


@dataclass
class FakeRpcClient:
    """Stands in for ``common.rpc.RpcClient``: records (kind, topic, method, kwargs)."""

    sent: list[tuple[str, str, str, dict[str, Any]]] = field(default_factory=list)

    async def cast(self, topic, method, ctx, **kwargs):
        self.sent.append(("cast", topic, method, kwargs))

    async def call(self, topic, method, ctx, timeout=None, **kwargs):
        self.sent.append(("call", topic, method, kwargs))
        return "console text"


async def test_compute_api_routes_every_method_to_the_host_topic():
    client = FakeRpcClient()
    api = ComputeAPI(client)
    ctx = RequestContext()
    inst = {"id": "i1"}
    await api.build_and_run_instance(ctx, "h1", inst, {"instance_id": "i1"}, 2)
    await api.terminate_instance(ctx, "h1", inst)
    await api.stop_instance(ctx, "h1", inst)
    await api.start_instance(ctx, "h1", inst)
    await api.reboot_instance(ctx, "h1", inst, "HARD")
    assert await api.get_console_output(ctx, "h1", inst, length=20) == "console text"
    assert client.sent == [
        ("cast", "compute.h1", "build_and_run_instance",
         {"instance": inst, "request_spec": {"instance_id": "i1"}, "attempt": 2}),
        ("cast", "compute.h1", "terminate_instance", {"instance": inst}),
        ("cast", "compute.h1", "stop_instance", {"instance": inst}),
        ("cast", "compute.h1", "start_instance", {"instance": inst}),
        ("cast", "compute.h1", "reboot_instance", {"instance": inst, "reboot_type": "HARD"}),
        ("call", "compute.h1", "get_console_output", {"instance": inst, "length": 20}),
    ]  # fmt: skip


def test_one_host_or_n_simulated_ones(conf):
    assert cmd.compute_hosts(conf) == ["cmp-a"]
    conf.set_override("simulated_hosts", 3, group="compute")
    assert cmd.compute_hosts(conf) == ["cmp-a-0", "cmp-a-1", "cmp-a-2"]
    conf.set_override("connection_uri", "qemu:///system", group="compute")
    with pytest.raises(SystemExit, match="needs a test:/// connection_uri"):
        cmd.compute_hosts(conf)


async def test_periodic_report_is_the_capacity_and_the_heartbeat(manager, conductor):
    task = asyncio.create_task(cmd.report_periodically(manager, interval=0.01))
    try:
        for _ in range(200):
            if len(conductor.named("report_capacity")) >= 2:
                break
            await asyncio.sleep(0.01)
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    reports = [r["capacity"] for r in conductor.named("report_capacity")]
    assert len(reports) >= 2
    # What the persisting scheduler needs to mark the service alive, with the broker node it uses.
    assert {(r["host"], r["broker_node"]) for r in reports} == {("cmp-a", "mq1:5672")}
    assert [name for name, _ in conductor.calls if name != "report_capacity"] == []


async def test_periodic_report_survives_a_failed_round(manager, conductor):
    calls = []

    async def flaky(ctx, **kw):
        calls.append(kw)
        if len(calls) == 1:
            raise ConnectionError("broker away")

    conductor.report_capacity = flaky
    task = asyncio.create_task(cmd.report_periodically(manager, interval=0.01))
    try:
        for _ in range(200):
            if len(calls) >= 2:
                break
            await asyncio.sleep(0.01)
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert len(calls) >= 2


async def test_a_report_after_a_change_postpones_the_periodic_one(manager, conductor):
    """The periodic report is due ``interval`` after the host's last report of any kind: a host whose changes
    keep it reporting sends no extra periodic ones, and no two reports are further apart than ``interval``."""
    loop = asyncio.get_running_loop()
    await manager.report_capacity(RequestContext.admin())  # as after a build
    changed_at = manager.last_report
    task = asyncio.create_task(cmd.report_periodically(manager, interval=0.4))
    try:
        await asyncio.sleep(0.2)
        assert len(conductor.named("report_capacity")) == 1  # only the change's report so far
        await manager.report_capacity(RequestContext.admin())  # another change, 0.2 s later
        second_change = manager.last_report
        for _ in range(300):
            if len(conductor.named("report_capacity")) >= 3:
                break
            await asyncio.sleep(0.01)
        periodic_at = loop.time()
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert len(conductor.named("report_capacity")) == 3
    assert periodic_at - second_change >= 0.4  # counted from the latest report, not from the first
    assert periodic_at - changed_at >= 0.6


@pytest.mark.parametrize("name", ["", "a-name-that-is-too-long", "br/x", "br x"])
async def test_bridge_names_the_kernel_would_refuse_fail_clearly(name):
    with pytest.raises(BridgeUnavailable, match="not a valid interface name"):
        await vif.ensure_bridge(name)
