"""ComputeManager flows on the real libvirt test:/// driver and a real image cache; the conductor and network
services are fakes recording what the manager asked of them."""

import asyncio

import libvirt
import pytest

from common.db.instances import PowerState, TaskState, VmState
from common.exceptions import NotFound
from services.compute.manager import BUILD_EVENT
from tests.unit.compute.fakes import HOST, build_request


def all_events(conductor):
    """Events in the order sent: ``action_events`` casts and those riding on ``instance_update``/``build_failed``."""
    out = []
    for name, kwargs in conductor.calls:
        out.extend(kwargs.get("events") or [])
        if name == "instance_update" and kwargs.get("event"):
            out.append(kwargs["event"])
    return out


def events(conductor, event=BUILD_EVENT):
    return [(e["result"], e.get("details")) for e in all_events(conductor) if e["event"] == event]


async def test_build_success_reports_every_step_and_goes_active(manager, conductor, network, driver, image_file, ctx):
    instance, spec = build_request(image_file.image(), vcpus=2, ram_mb=256, disk_gb=1, nets=2)
    await manager.build_and_run_instance(ctx, instance=instance, request_spec=spec, attempt=1)

    info = await driver.get_info(instance["id"])
    assert info.power_state == PowerState.RUNNING
    assert (info.vcpus, info.memory_mb, info.disk_gb) == (2, 256, 1)
    assert [(e["event"], e["result"]) for e in all_events(conductor)] == [
        (BUILD_EVENT, "start"),
        ("compute_build_network", "start"), ("compute_build_network", "Success"),
        ("compute_build_image", "start"), ("compute_build_image", "Success"),
        ("compute_build_disk", "start"), ("compute_build_disk", "Success"),
        ("compute_build_spawn", "start"), ("compute_build_spawn", "Success"),
        (BUILD_EVENT, "Success"),
    ]  # fmt: skip
    assert all(e["host"] == HOST for e in all_events(conductor))
    # The ports came with the request (the API made them, the claim bound them): no call to the network
    # service, which is only asked for firewall views, and test:/// has no firewall.
    assert network.calls == []
    xml = driver._conn.lookupByUUIDString(instance["id"]).XMLDesc(0)
    assert all(p["mac_address"] in xml and p["bridge"] in xml for p in spec["ports"])
    # A quick build is one cast to the conductor: its final update carries every step (BuildProgress).
    assert [name for name, _ in conductor.calls if name != "report_capacity"] == ["instance_update"]
    updates = conductor.named("instance_update")
    assert updates[-1]["expected_task_state"] == [TaskState.NETWORKING, TaskState.SPAWNING]
    final = updates[-1]["values"]
    assert final["vm_state"] == VmState.ACTIVE and final["task_state"] is None
    assert final["power_state"] == 1 and final["host"] == HOST and final["launched_at"]
    assert conductor.named("build_failed") == []
    assert (manager.image_cache.path / spec["image"]["id"]).exists()
    [report] = conductor.named("report_capacity")
    assert report["capacity"]["running_vms"] == 1 and report["capacity"]["vcpus_used"] == 2


async def test_a_slow_build_shows_its_steps_before_it_ends(manager, conductor, driver, image_file, ctx, conf):
    """Past ``progress_interval`` the steps so far go out on their own (and ``spawning`` with them), so users
    watching a slow build see it move; every event is still sent exactly once, the final update last."""
    conf.set_override("progress_interval", 0.0, group="compute")
    instance, spec = build_request(image_file.image())
    await manager.build_and_run_instance(ctx, instance=instance, request_spec=spec, attempt=1)

    casts = [name for name, _ in conductor.calls if name != "report_capacity"]
    assert len(casts) > 1 and casts[-1] == "instance_update"
    assert conductor.named("instance_update")[-1]["values"]["vm_state"] == VmState.ACTIVE
    spawning = [u for u in conductor.named("instance_update") if u["values"] == {"task_state": TaskState.SPAWNING}]
    assert [u["expected_task_state"] for u in spawning] in ([], [[TaskState.NETWORKING]])
    sent = [(e["event"], e["result"]) for e in all_events(conductor)]
    assert len(sent) == len(set(sent)) == 10
    assert sent[0] == (BUILD_EVENT, "start") and sent[-1] == (BUILD_EVENT, "Success")


async def test_image_checksum_mismatch_fails_the_build_and_cleans_up(
    manager, conductor, network, driver, image_file, ctx
):
    instance, spec = build_request(image_file.image(os_hash_value="f" * 64))
    await manager.build_and_run_instance(ctx, instance=instance, request_spec=spec, attempt=2)

    [failed] = conductor.named("build_failed")
    assert failed["step"] == "image" and failed["host"] == HOST and failed["attempt"] == 2
    assert failed["reason"].startswith(f"image on host {HOST}: image {spec['image']['id']} from file://")
    assert "sha256 mismatch" in failed["reason"]
    assert events(conductor)[-1] == ("Error", failed["reason"])
    assert network.calls == []  # the ports stay with the instance for its next attempt
    assert await driver.get_info(instance["id"]) is None
    assert not any(u["values"].get("vm_state") == VmState.ACTIVE for u in conductor.named("instance_update"))


async def test_spawn_failure_removes_the_domain_and_keeps_the_ports(
    manager, conductor, network, driver, image_file, ctx
):
    instance, spec = build_request(image_file.image(), mac="not-a-mac")  # libvirt refuses the domain XML
    await manager.build_and_run_instance(ctx, instance=instance, request_spec=spec, attempt=1)

    [failed] = conductor.named("build_failed")
    assert failed["step"] == "spawn"
    assert failed["reason"].startswith(f"spawn on host {HOST}: libvirt error: ")
    assert "not-a-mac" in failed["reason"]
    assert network.calls == []
    assert await driver.list_instances() == []


async def test_failure_after_define_undefines_the_domain(manager, conductor, driver, image_file, ctx, monkeypatch):
    instance, spec = build_request(image_file.image())

    def refuse_start(self, flags=0):
        raise libvirt.libvirtError("simulated: cannot start")

    monkeypatch.setattr(libvirt.virDomain, "create", refuse_start)
    await manager.build_and_run_instance(ctx, instance=instance, request_spec=spec, attempt=1)
    [failed] = conductor.named("build_failed")
    assert failed["step"] == "spawn" and "simulated: cannot start" in failed["reason"]
    assert await driver.get_info(instance["id"]) is None  # defined, then removed by the cleanup


async def test_a_port_without_a_bridge_fails_validation(manager, conductor, network, driver, image_file, ctx):
    instance, spec = build_request(image_file.image())
    del spec["ports"][0]["bridge"]
    await manager.build_and_run_instance(ctx, instance=instance, request_spec=spec, attempt=1)
    [failed] = conductor.named("build_failed")
    assert failed["step"] == "validate"
    assert failed["reason"] == f"validate on host {HOST}: malformed request (KeyError: 'bridge')"
    assert await driver.list_instances() == [] and network.calls == []


async def test_malformed_request_fails_validation_without_touching_anything(manager, conductor, network, ctx):
    instance, spec = build_request({"id": "img"})
    del spec["flavor"]["ram_mb"]
    await manager.build_and_run_instance(ctx, instance=instance, request_spec=spec, attempt=1)
    [failed] = conductor.named("build_failed")
    assert failed["step"] == "validate" and "ram_mb" in failed["reason"]
    assert network.calls == []


async def test_redelivered_build_is_a_no_op(manager, conductor, network, driver, image_file, ctx):
    instance, spec = build_request(image_file.image())
    await manager.build_and_run_instance(ctx, instance=instance, request_spec=spec, attempt=1)
    conductor.calls.clear()
    await manager.build_and_run_instance(ctx, instance=instance, request_spec=spec, attempt=1)

    assert network.calls == []
    assert len(await driver.list_instances()) == 1
    assert conductor.named("action_event") == []
    [update] = conductor.named("instance_update")
    assert update["values"]["vm_state"] == VmState.ACTIVE
    assert update["expected_task_state"] == [TaskState.NETWORKING, TaskState.SPAWNING]


async def test_concurrent_duplicate_builds_make_one_guest(manager, network, driver, image_file, ctx):
    instance, spec = build_request(image_file.image())
    await asyncio.gather(
        *(manager.build_and_run_instance(ctx, instance=instance, request_spec=spec, attempt=1) for _ in range(3))
    )
    assert len(await driver.list_instances()) == 1


async def test_terminate_destroys_releases_and_reports_deleted(
    manager, conductor, network, driver, image_file, ctx, conf
):
    instance, spec = build_request(image_file.image())
    await manager.build_and_run_instance(ctx, instance=instance, request_spec=spec, attempt=1)
    conductor.calls.clear()
    await manager.terminate_instance(ctx, instance=instance)

    assert await driver.get_info(instance["id"]) is None
    assert network.named("deallocate_for_instance") == [{"instance_id": instance["id"]}]
    assert conductor.named("instance_deleted") == [{"instance_id": instance["id"], "host": HOST}]
    assert events(conductor, "compute_terminate_instance") == [("start", None), ("Success", None)]
    # The build reported a moment ago, so this change waits for the end of min_report_interval (coalesced).
    assert conductor.named("report_capacity") == []
    await asyncio.sleep(conf.compute.min_report_interval + 0.2)
    assert [r["capacity"]["running_vms"] for r in conductor.named("report_capacity")] == [0]

    await manager.terminate_instance(ctx, instance=instance)  # again: still fine
    assert len(conductor.named("instance_deleted")) == 2
    await manager.close()


async def test_reports_after_a_burst_of_changes_are_coalesced(manager, conductor, image_file, ctx, conf):
    """The first change is reported at once; the next ones within min_report_interval share one report."""
    conf.set_override("min_report_interval", 0.3, group="compute")
    builds = [build_request(image_file.image()) for _ in range(5)]
    for instance, spec in builds:
        await manager.build_and_run_instance(ctx, instance=instance, request_spec=spec, attempt=1)
    assert [r["capacity"]["running_vms"] for r in conductor.named("report_capacity")] == [1]
    await asyncio.sleep(0.5)
    assert [r["capacity"]["running_vms"] for r in conductor.named("report_capacity")] == [1, 5]


async def test_terminate_that_cannot_release_ports_puts_the_instance_in_error(
    manager, conductor, network, image_file, ctx
):
    instance, spec = build_request(image_file.image())
    await manager.build_and_run_instance(ctx, instance=instance, request_spec=spec, attempt=1)

    async def unreachable(ctx, **kw):
        raise TimeoutError("network did not answer")

    network.deallocate_for_instance = unreachable
    conductor.calls.clear()
    await manager.terminate_instance(ctx, instance=instance)
    assert conductor.named("instance_deleted") == []
    result, details = events(conductor, "compute_terminate_instance")[-1]
    assert result == "Error" and details == f"terminate on host {HOST}: TimeoutError: network did not answer"
    assert conductor.named("instance_update")[-1]["values"] == {"vm_state": VmState.ERROR, "task_state": None}


async def test_stop_start_reboot(manager, conductor, driver, image_file, ctx):
    instance, spec = build_request(image_file.image())
    await manager.build_and_run_instance(ctx, instance=instance, request_spec=spec, attempt=1)

    conductor.calls.clear()
    await manager.stop_instance(ctx, instance=instance)
    assert (await driver.get_info(instance["id"])).power_state == PowerState.SHUTDOWN
    [update] = conductor.named("instance_update")
    assert update["values"] == {"task_state": None, "vm_state": VmState.STOPPED, "power_state": PowerState.SHUTDOWN}
    assert update["expected_task_state"] == [TaskState.POWERING_OFF]
    assert events(conductor, "compute_stop_instance") == [("start", None), ("Success", None)]

    conductor.calls.clear()
    await manager.start_instance(ctx, instance=instance)
    [update] = conductor.named("instance_update")
    assert update["values"] == {"task_state": None, "vm_state": VmState.ACTIVE, "power_state": PowerState.RUNNING}
    assert update["expected_task_state"] == [TaskState.POWERING_ON]

    for reboot_type in ("SOFT", "HARD"):
        conductor.calls.clear()
        await manager.reboot_instance(ctx, instance=instance, reboot_type=reboot_type)
        [update] = conductor.named("instance_update")
        assert update["values"]["power_state"] == PowerState.RUNNING
        assert update["expected_task_state"] == [TaskState.REBOOTING, TaskState.REBOOTING_HARD]
        assert events(conductor, "compute_reboot_instance")[-1] == ("Success", None)
    assert (await driver.get_info(instance["id"])).power_state == PowerState.RUNNING


async def test_power_op_on_a_missing_guest_clears_the_task_and_says_why(manager, conductor, ctx):
    instance = {"id": "5b0e4c1e-7a7c-4d4e-9d55-0a1c9f1f3a77"}
    await manager.stop_instance(ctx, instance=instance)
    result, details = events(conductor, "compute_stop_instance")[-1]
    assert result == "Error"
    assert details == f"compute_stop_instance on host {HOST}: instance {instance['id']} has no domain on host {HOST}"
    [update] = conductor.named("instance_update")
    assert update["values"] == {"task_state": None, "power_state": PowerState.NOSTATE}


async def test_console_output(manager, image_file, ctx):
    instance, spec = build_request(image_file.image())
    await manager.build_and_run_instance(ctx, instance=instance, request_spec=spec, attempt=1)
    assert instance["id"] in await manager.get_console_output(ctx, instance=instance, length=5)
    with pytest.raises(NotFound):
        await manager.get_console_output(ctx, instance={"id": "5b0e4c1e-7a7c-4d4e-9d55-0a1c9f1f3a77"})


async def test_capacity_report_shape(manager, conductor, conf, ctx):
    report = await manager.report_capacity(ctx)
    assert conductor.named("report_capacity") == [{"capacity": report}]
    assert set(report) >= {
        "host", "vcpus", "memory_mb", "local_gb", "vcpus_used", "memory_mb_used", "local_gb_used",
        "running_vms", "virt_type", "hypervisor_hostname", "hypervisor_type", "hypervisor_version", "cpu_info",
        "availability_zone", "broker_node", "reported_at",
    }  # fmt: skip
    assert report["host"] == HOST and report["broker_node"] == "mq1:5672"
    assert report["virt_type"] == "test" and report["availability_zone"] == "nova"
    assert report["cpu_allocation_ratio"] == conf.compute.cpu_allocation_ratio
    assert (report["vcpus_used"], report["running_vms"]) == (0, 0)


async def test_build_fails_cleanly_when_the_hypervisor_cannot_be_asked(
    manager, conductor, network, driver, image_file, ctx, monkeypatch
):
    def libvirt_down(self, instance_id):
        raise libvirt.libvirtError("simulated: connection to libvirtd lost")

    monkeypatch.setattr(type(driver), "_lookup", libvirt_down)
    instance, spec = build_request(image_file.image())
    await manager.build_and_run_instance(ctx, instance=instance, request_spec=spec, attempt=1)
    [failed] = conductor.named("build_failed")
    assert failed["step"] == "validate"
    assert failed["reason"] == (
        f"validate on host {HOST}: cannot tell whether the guest exists "
        "(libvirt error: simulated: connection to libvirtd lost)"
    )
    assert network.calls == []


async def test_instance_id_that_is_not_a_uuid_is_refused_before_anything_is_made(manager, conductor, network, ctx):
    instance, spec = build_request({"id": "img"})
    instance["id"] = "../../etc"
    await manager.build_and_run_instance(ctx, instance=instance, request_spec=spec, attempt=1)
    [failed] = conductor.named("build_failed")
    assert failed["step"] == "validate" and "badly formed hexadecimal UUID string" in failed["reason"]
    assert network.calls == []


@pytest.mark.parametrize("asked", [True, False])
async def test_config_drive_step_when_asked_or_forced(manager, conductor, driver, image_file, conf, ctx, asked):
    if not asked:
        conf.set_override("force_config_drive", True, group="compute")
    instance, spec = build_request(image_file.image())
    instance["config_drive"] = asked
    await manager.build_and_run_instance(ctx, instance=instance, request_spec=spec, attempt=1)

    steps = [(e["event"], e["result"]) for e in all_events(conductor) if e["event"].startswith("compute_build_")]
    assert steps[7:-1] == [("compute_build_config_drive", "start"), ("compute_build_config_drive", "Success"),
                         ("compute_build_spawn", "start"), ("compute_build_spawn", "Success")]  # fmt: skip
    assert conductor.named("instance_update")[-1]["values"]["config_drive"] is True
    xml = driver._conn.lookupByUUIDString(instance["id"]).XMLDesc(0)  # test:/// keeps the XML, makes no file
    assert "disk.config" in xml and 'device="cdrom"' in xml.replace("'", '"')


async def test_no_config_drive_no_step(manager, conductor, driver, image_file, ctx):
    instance, spec = build_request(image_file.image())
    await manager.build_and_run_instance(ctx, instance=instance, request_spec=spec, attempt=1)
    assert not [e for e in all_events(conductor) if e["event"] == "compute_build_config_drive"]
    assert "config_drive" not in conductor.named("instance_update")[-1]["values"]
    assert "cdrom" not in driver._conn.lookupByUUIDString(instance["id"]).XMLDesc(0)
