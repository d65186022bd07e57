"""The libvirt driver against libvirt's own in-process test:/// hypervisor (real libvirt calls, no QEMU)."""

import uuid

import libvirt
import pytest

from common.db.instances import PowerState
from common.exceptions import BadRequest, NotFound
from services.compute.exceptions import VirtError
from services.compute.virt.driver import Guest, Vif
from services.compute.virt.libvirt.driver import LibvirtDriver
from tests.unit.compute.fakes import HOST

FOREIGN_DOMAIN = "<domain type='test'><name>foreign</name><memory>1024</memory><os><type>hvm</type></os></domain>"


def guest(**kw):
    base = dict(
        uuid=str(uuid.uuid4()),
        vcpus=2,
        memory_mb=256,
        disk_gb=3,
        flavor_name="m1.small",
        image_id="img-1",
        project_id="p1",
        vifs=(Vif(port_id="0123456789abcdef", mac="fa:16:3e:00:00:01", bridge="brqtest", mtu=1450),),
    )
    base.update(kw)
    return Guest(**base)


async def test_test_uri_gives_test_domains(driver):
    assert driver.virt_type == "test"


async def test_spawn_defines_and_starts_a_persistent_domain(driver, tmp_path):
    g = guest()
    await driver.create_disk(g, tmp_path / "unused-image")  # test:///: no disk is made
    await driver.spawn(g)
    info = await driver.get_info(g.uuid)
    assert info.power_state == PowerState.RUNNING
    assert (info.vcpus, info.memory_mb, info.disk_gb) == (2, 256, 3)
    driver._conn.defineXML(FOREIGN_DOMAIN)
    assert [i.uuid for i in await driver.list_instances()] == [g.uuid]  # only Stratus guests count
    dom = driver._conn.lookupByUUIDString(g.uuid)
    assert dom.isPersistent()
    assert dom.name() == f"instance-{g.uuid}"
    assert "tap0123456789a" in dom.XMLDesc()
    assert not (driver._instances_path / g.uuid).exists()


async def test_power_cycle(driver):
    g = guest()
    await driver.spawn(g)
    await driver.power_off(g.uuid, timeout=1)
    assert (await driver.get_info(g.uuid)).power_state == PowerState.SHUTDOWN
    await driver.power_off(g.uuid, timeout=1)  # already off: nothing to do
    await driver.power_on(g.uuid)
    await driver.power_on(g.uuid)  # already on
    assert (await driver.get_info(g.uuid)).power_state == PowerState.RUNNING
    await driver.reboot(g.uuid, hard=False, timeout=1)
    await driver.reboot(g.uuid, hard=True, timeout=1)
    assert (await driver.get_info(g.uuid)).power_state == PowerState.RUNNING


async def test_hard_power_off(driver):
    g = guest()
    await driver.spawn(g)
    await driver.power_off(g.uuid, timeout=0)
    assert (await driver.get_info(g.uuid)).power_state == PowerState.SHUTDOWN


async def test_destroy_is_idempotent(driver):
    g = guest()
    await driver.spawn(g)
    await driver.destroy(g.uuid)
    assert await driver.get_info(g.uuid) is None
    await driver.destroy(g.uuid)
    await driver.destroy(str(uuid.uuid4()))  # never existed


async def test_destroy_refuses_ids_that_are_not_uuids(driver):
    with pytest.raises(BadRequest):
        await driver.destroy("../../etc")


async def test_operations_on_a_missing_guest_raise_not_found(driver):
    missing = str(uuid.uuid4())
    for call in (
        driver.power_off(missing, timeout=0),
        driver.power_on(missing),
        driver.get_console_output(missing),
    ):
        with pytest.raises(NotFound, match=f"instance {missing} has no domain on host {HOST}"):
            await call


async def test_console_output_of_a_test_guest_says_what_it_is(driver):
    g = guest()
    await driver.spawn(g)
    text = await driver.get_console_output(g.uuid, length=10)
    assert "test:///" in text and g.uuid in text


async def test_spawn_twice_is_a_libvirt_error(driver):
    g = guest()
    await driver.spawn(g)
    with pytest.raises(VirtError, match="libvirt error"):
        await driver.spawn(g)


async def test_capacity_from_the_hypervisor_and_overrides(conf, driver):
    cap = await driver.host_capacity()
    assert (cap.vcpus, cap.memory_mb) == (16, 3072)  # what test:///default reports
    assert cap.hypervisor_type == "TEST"
    assert cap.hypervisor_hostname == HOST
    assert cap.local_gb > 0
    assert cap.cpu_info["arch"] == "i686"
    conf.set_override("vcpus", 64, group="compute")
    conf.set_override("memory_mb", 65536, group="compute")
    conf.set_override("local_gb", 500, group="compute")
    cap = await driver.host_capacity()
    assert (cap.vcpus, cap.memory_mb, cap.local_gb) == (64, 65536, 500)


async def test_each_driver_is_its_own_host(conf, driver):
    other = await LibvirtDriver.create(conf, "cmp-b")
    try:
        g = guest()
        await driver.spawn(g)
        assert await other.get_info(g.uuid) is None
        assert await other.list_instances() == []
    finally:
        await other.close()


async def test_unreachable_libvirt_names_the_uri(conf):
    conf.set_override("connection_uri", "qemu+unix:///system?socket=/nonexistent/sock", group="compute")
    with pytest.raises(VirtError, match="cannot connect to libvirt at qemu\\+unix:///system"):
        await LibvirtDriver.create(conf, HOST)


async def test_close_is_idempotent(conf):
    drv = await LibvirtDriver.create(conf, HOST)
    await drv.close()
    await drv.close()


def test_libvirt_python_is_importable_without_side_effects():
    assert libvirt.getVersion() > 0
