"""One real QEMU guest booted through api → scheduler → compute → network, its serial console read."""

import subprocess
import time
from pathlib import Path

import pytest

from tests.fixtures.cloud import wait_status

pytestmark = pytest.mark.integration


def _virsh(*args: str) -> str:
    return subprocess.run(["virsh", "-c", "qemu:///system", *args], capture_output=True, text=True).stdout


def test_real_guest_boots_prints_its_marker_and_is_cleaned_up(qemu_cloud):
    conn = qemu_cloud.sdk()
    flavor = conn.compute.find_flavor("m1.tiny", ignore_missing=False)
    image = conn.image.find_image("tiny", ignore_missing=False)
    net = conn.network.find_network("private", ignore_missing=False)
    qemu_cloud.bridges = [f"brq{net.id[:11]}"]
    t0 = time.monotonic()
    server = conn.compute.create_server(name="int-guest", flavor_id=flavor.id, image_id=image.id,
                                        networks=[{"uuid": net.id}])  # fmt: skip
    server = wait_status(conn, server.id, {"ACTIVE", "ERROR"}, timeout=120)
    active_s = time.monotonic() - t0
    assert server.status == "ACTIVE", server.fault
    domain = f"instance-{server.id}"
    assert domain in _virsh("list", "--name").split()
    xml = _virsh("dumpxml", domain)
    assert "type='qemu'" in xml or "type='kvm'" in xml

    console = ""
    deadline = time.monotonic() + 120
    while "STRATUS-GUEST: booted" not in console and time.monotonic() < deadline:
        time.sleep(1)
        console = conn.compute.get_server_console_output(server)["output"]
    assert "STRATUS-GUEST: booted" in console, console[-2000:]
    print(f"time to ACTIVE {active_s:.1f}s; boot marker after {time.monotonic() - t0:.1f}s")

    disk_dirs = list(Path(qemu_cloud.workdir / "state" / "instances").glob(f"{server.id}*"))
    assert disk_dirs, "instance directory missing"
    conn.compute.delete_server(server.id)
    conn.compute.wait_for_delete(server, wait=60)
    assert domain not in _virsh("list", "--all", "--name").split()
    assert not any(p.exists() for p in disk_dirs), "disk overlay left behind"
    assert list(conn.network.ports(device_id=server.id)) == []
    hv = list(conn.compute.hypervisors(details=True))
    assert all(h.vcpus_used == 0 for h in hv)
