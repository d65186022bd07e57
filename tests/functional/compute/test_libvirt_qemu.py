"""The libvirt driver and the compute manager on real QEMU guests through the system libvirtd (qemu:///system).

Needs nothing but libvirt and QEMU: the guest is a 512-byte boot sector that prints a marker on the serial
console (BIOS boot from a virtio qcow2 overlay, like a real cloud image). A second test boots the devstack
guest image when it has been built. Bridges made here are deleted afterwards; guests are destroyed.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import shutil
import subprocess
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from common import config
from common.db.instances import PowerState, VmState
from services.compute.imagecache import ImageCache
from services.compute.manager import ComputeManager
from services.compute.virt.driver import Guest, Vif
from services.compute.virt.libvirt import vif
from services.compute.virt.libvirt.driver import LibvirtDriver
from tests.fixtures._common import FixtureError
from tests.unit.compute.fakes import FakeConductor, FakeNetwork, ImageFile, build_request

pytestmark = [
    pytest.mark.functional,
    pytest.mark.skipif(
        not (shutil.which("qemu-system-x86_64") and shutil.which("qemu-img")), reason="QEMU is not installed"
    ),
    pytest.mark.skipif(os.geteuid() != 0, reason="bridges and qemu:///system need root"),
]

HOST = "qemu-test"
MARKER = b"STRATUS-TEST-GUEST: hello from the boot sector"
# cli; cld; xor ax,ax; mov ds,ax; mov si,msg; mov dx,0x3f8 (COM1)
# loop: lodsb; test al,al; jz done; out dx,al; jmp loop;  done: hlt; jmp done;  msg: MARKER "\r\n\0"
_HELLO_CODE = bytes.fromhex("fafc31c08ed8be177cbaf803ac84c07403eeebf8f4ebfd")
GUEST_IMAGE = Path(os.environ.get("STRATUS_IMAGE_FILE", "/opt/stratus/data/images/stratus-guest.qcow2"))


def hello_image(directory: Path) -> ImageFile:
    """A 1 MiB qcow2 whose boot sector prints MARKER on COM1 and halts (virtio-blk wants more than 1 sector)."""
    raw = directory / "hello.raw"
    raw.write_bytes((_HELLO_CODE + MARKER + b"\r\n\0").ljust(510, b"\0") + b"\x55\xaa")
    os.truncate(raw, 1024 * 1024)
    qcow2 = directory / "hello.qcow2"
    subprocess.run(["qemu-img", "convert", "-q", "-f", "raw", "-O", "qcow2", str(raw), str(qcow2)], check=True)
    return ImageFile(qcow2, qcow2.read_bytes())


@pytest.fixture
def system_libvirtd(request: pytest.FixtureRequest):
    try:
        return request.getfixturevalue("libvirtd")
    except FixtureError as e:
        pytest.skip(f"qemu:///system is not available: {e}")


@pytest.fixture(scope="module")
def state_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Shared by the module's tests, so the virt_type probe runs once and the others use its cached result."""
    return tmp_path_factory.mktemp("compute-state")


@pytest.fixture
def conf(tmp_path: Path, state_path: Path, system_libvirtd):
    conf = config.new_conf()
    conf(args=[], default_config_files=[])
    conf.set_override("state_path", str(state_path))
    conf.set_override("instances_path", str(tmp_path / "instances"), group="compute")
    conf.set_override("image_cache_path", str(tmp_path / "images"), group="compute")
    conf.set_override("host", HOST)
    conf.set_override("connection_uri", system_libvirtd.uri, group="compute")
    conf.set_override("shutdown_timeout", 2.0, group="compute")
    conf.set_override("image_download_retry_interval", 0.0, group="compute")
    yield conf
    conf.reset()


@pytest_asyncio.fixture
async def driver(conf) -> AsyncIterator[LibvirtDriver]:
    drv = await LibvirtDriver.create(conf, HOST)  # virt_type auto: runs the KVM probe once
    made: list[str] = []
    drv.test_guests = made  # type: ignore[attr-defined]
    try:
        yield drv
    finally:
        for instance_id in made:
            await drv.destroy(instance_id)
        await drv.close()


@pytest.fixture
def bridge() -> str:
    name = f"brqt{secrets.token_hex(4)}"
    yield name
    subprocess.run(["ip", "link", "del", name], capture_output=True)


async def wait_for_console(drv: LibvirtDriver, instance_id: str, marker: bytes, timeout: float) -> str:
    deadline = asyncio.get_running_loop().time() + timeout
    text = ""
    while asyncio.get_running_loop().time() < deadline:
        text = await drv.get_console_output(instance_id)
        if marker.decode() in text:
            return text
        await asyncio.sleep(0.2)
    raise AssertionError(f"{marker!r} not on the console within {timeout}s; console so far:\n{text}")


def link_exists(name: str) -> bool:
    return Path("/sys/class/net", name).exists()


def link_mtu(name: str) -> int:
    return int(Path("/sys/class/net", name, "mtu").read_text())


async def test_driver_runs_a_bios_guest_from_a_qcow2_overlay(conf, driver, bridge, tmp_path):
    assert driver.virt_type in ("kvm", "qemu")
    assert (Path(conf.state_path) / "compute" / "virt_type.json").exists()
    image = hello_image(tmp_path)
    cached = await ImageCache(conf).fetch(image.image(id="hello"))
    port_id = str(uuid.uuid4())
    guest = Guest(
        uuid=str(uuid.uuid4()),
        vcpus=1,
        memory_mb=64,
        disk_gb=1,
        flavor_name="tiny",
        image_id="hello",
        image_format="qcow2",
        vifs=(Vif(port_id=port_id, mac="fa:16:3e:12:34:56", bridge=bridge, mtu=1400),),
    )
    driver.test_guests.append(guest.uuid)
    await driver.create_disk(guest, cached)
    await driver.spawn(guest)
    instance_dir = Path(conf.compute.instances_path) / guest.uuid
    assert (instance_dir / "disk").exists()

    await wait_for_console(driver, guest.uuid, MARKER, timeout=30)
    assert (await driver.get_info(guest.uuid)).power_state == PowerState.RUNNING
    assert vif.bridge_exists(bridge)
    tap = f"tap{port_id[:11]}"
    assert link_exists(f"{bridge}/brif/{tap}")  # the tap is plugged into the bridge
    assert link_mtu(tap) == 1400
    assert (await driver.get_console_output(guest.uuid, length=1)).startswith("STRATUS-TEST-GUEST")

    capacity = await driver.host_capacity()
    assert capacity.hypervisor_type == "QEMU" and capacity.vcpus > 0 and capacity.local_gb > 0
    assert guest.uuid in [i.uuid for i in await driver.list_instances()]  # the system libvirtd may hold others

    # The boot sector ignores the ACPI power button: the clean shutdown times out, then it is powered off hard.
    await driver.power_off(guest.uuid, timeout=1)
    assert (await driver.get_info(guest.uuid)).power_state == PowerState.SHUTDOWN
    await driver.power_on(guest.uuid)
    await wait_for_console(driver, guest.uuid, MARKER, timeout=30)
    await driver.reboot(guest.uuid, hard=True, timeout=0)
    assert (await driver.get_info(guest.uuid)).power_state == PowerState.RUNNING

    await driver.destroy(guest.uuid)
    assert await driver.get_info(guest.uuid) is None
    assert not instance_dir.exists()
    assert not link_exists(tap)
    await driver.destroy(guest.uuid)


async def test_manager_builds_and_terminates_a_real_guest(conf, driver, bridge, tmp_path):
    conductor, network = FakeConductor(), FakeNetwork()
    manager = ComputeManager(conf, HOST, driver, conductor, network, ImageCache(conf))
    image = hello_image(tmp_path)
    instance, spec = build_request(image.image(), ram_mb=64, disk_gb=1, nets=1, bridge=bridge)
    driver.test_guests.append(instance["id"])
    await manager.build_and_run_instance(None, instance=instance, request_spec=spec, attempt=1)

    assert conductor.named("build_failed") == []
    assert conductor.named("instance_update")[-1]["values"]["vm_state"] == VmState.ACTIVE
    await wait_for_console(driver, instance["id"], MARKER, timeout=30)
    console = await manager.get_console_output(None, instance=instance, length=5)
    assert MARKER.decode() in console

    await manager.terminate_instance(None, instance=instance)
    assert conductor.named("instance_deleted") == [{"instance_id": instance["id"], "host": HOST}]
    assert await driver.get_info(instance["id"]) is None


async def test_missing_bridge_fails_the_spawn_naming_it(conf, driver, tmp_path):
    conf.set_override("create_bridges", False, group="compute")
    conductor, network = FakeConductor(), FakeNetwork()
    manager = ComputeManager(conf, HOST, driver, conductor, network, ImageCache(conf))
    instance, spec = build_request(hello_image(tmp_path).image(), ram_mb=64, disk_gb=1)
    driver.test_guests.append(instance["id"])
    await manager.build_and_run_instance(None, instance=instance, request_spec=spec, attempt=1)

    [failed] = conductor.named("build_failed")
    bridge = f"brq{spec['networks'][0]['uuid'][:11]}"
    assert failed["step"] == "spawn"
    assert failed["reason"].startswith(f"spawn on host {HOST}: bridge '{bridge}' of port ")
    assert failed["reason"].endswith(f"does not exist on host {HOST}")
    assert not (Path(conf.compute.instances_path) / instance["id"]).exists()  # the disk made before is gone
    assert network.named("deallocate_for_instance") == []  # the ports stay with the instance for its next attempt


@pytest.mark.skipif(
    not GUEST_IMAGE.exists(), reason=f"no guest image at {GUEST_IMAGE} (devstack/tools/build-guest-image.sh)"
)
async def test_devstack_guest_image_boots_and_shuts_down_cleanly(conf, driver, bridge, caplog):
    cached = await ImageCache(conf).fetch({"id": "stratus-guest", "location": GUEST_IMAGE.as_uri()})
    guest = Guest(
        uuid=str(uuid.uuid4()),
        vcpus=1,
        memory_mb=256,
        disk_gb=1,
        vifs=(Vif(port_id=str(uuid.uuid4()), mac="fa:16:3e:65:43:21", bridge=bridge),),
    )
    driver.test_guests.append(guest.uuid)
    await driver.create_disk(guest, cached)
    await driver.spawn(guest)
    await wait_for_console(driver, guest.uuid, b"STRATUS-GUEST: booted", timeout=120)

    # This guest runs acpid: a soft reboot is a clean shutdown (its own marker), no hard power-off needed.
    caplog.set_level(logging.WARNING, logger="services.compute.virt.libvirt.driver")
    await wait_for_console(driver, guest.uuid, b"STRATUS-GUEST: ready", timeout=120)
    await driver.reboot(guest.uuid, hard=False, timeout=60)
    assert "powering off hard" not in caplog.text
    assert "STRATUS-GUEST: ready" not in await driver.get_console_output(guest.uuid)  # a new boot, a new log
    await wait_for_console(driver, guest.uuid, b"STRATUS-GUEST: booted", timeout=120)
