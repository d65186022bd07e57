"""A real QEMU guest on a network where nothing serves DHCP or metadata (``[network] serve_dhcp`` false):
booted with ``config_drive: true``, it finds the config-2 cdrom, takes its address, hostname and ssh key from
it and says so on the serial console."""

from __future__ import annotations

import base64
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from services.compute import firewall
from tests.fixtures.cloud import Cloud, wait_status

pytestmark = pytest.mark.integration
PUBKEY = (
    "ssh-ed25519 "
    + base64.b64encode(b"\x00\x00\x00\x0bssh-ed25519\x00\x00\x00\x20" + bytes(range(32))).decode()
    + " stratus@test"
)


@pytest.fixture(scope="module")
def plain_cloud(postgres, rabbit, libvirtd, guest_image):
    """Real QEMU guests, and a network service that is not a network node: no DHCP, no metadata."""
    with tempfile.TemporaryDirectory(prefix="stratus-int-cd-") as tmp:
        c = Cloud(Path(tmp), postgres, rabbit, compute_hosts=1, connection_uri="qemu:///system",
                  compute_overrides={"virt_type": "auto", "vcpus": 2, "memory_mb": 4096, "local_gb": 20,
                                     "reserved_host_memory_mb": 0},
                  image_file=guest_image)  # fmt: skip
        try:
            c.start(timeout=90)
            yield c
        finally:
            c.stop()
            table = firewall.table_name("compute", str(Path(tmp) / "state"))
            for family in ("bridge", "inet"):
                subprocess.run(["nft", "delete", "table", family, table], capture_output=True)
            for bridge in c.bridges:
                subprocess.run(["ip", "link", "del", bridge], capture_output=True)


def _virsh(*args: str) -> str:
    return subprocess.run(["virsh", "-c", "qemu:///system", *args], capture_output=True, text=True).stdout


def test_guest_without_metadata_service_reads_its_config_drive(plain_cloud):
    conn = plain_cloud.sdk()
    flavor = conn.compute.find_flavor("m1.tiny", ignore_missing=False)
    image = conn.image.find_image("tiny", ignore_missing=False)
    net = conn.network.find_network("private", ignore_missing=False)
    plain_cloud.bridges = [f"brq{net.id[:11]}"]
    key = conn.compute.create_keypair(name="cd-key", public_key=PUBKEY)
    t0 = time.monotonic()
    server = conn.compute.create_server(name="cd-guest", flavor_id=flavor.id, image_id=image.id,
                                        networks=[{"uuid": net.id}], key_name=key.name,
                                        config_drive=True)  # fmt: skip
    server = wait_status(conn, server.id, {"ACTIVE", "ERROR"}, timeout=120)
    assert server.status == "ACTIVE", server.fault
    assert conn.compute.get_server(server.id).has_config_drive in (True, "True")
    iso = plain_cloud.workdir / "state" / "instances" / server.id / "disk.config"
    assert iso.exists()
    xml = _virsh("dumpxml", f"instance-{server.id}")
    assert "device='cdrom'" in xml and str(iso) in xml

    console, deadline = "", time.monotonic() + 120
    while "STRATUS-GUEST: ready" not in console and time.monotonic() < deadline:
        time.sleep(1)
        console = conn.compute.get_server_console_output(server)["output"]
    marker_s = time.monotonic() - t0
    assert "STRATUS-GUEST: config-drive hostname=cd-guest" in console, console[-3000:]
    assert "STRATUS-GUEST: no-dhcp" in console  # nothing served DHCP: the drive was the only source
    [port] = list(conn.network.ports(device_id=server.id))
    assert f"STRATUS-GUEST: config-drive ip={port.fixed_ips[0]['ip_address']}" in console, console[-3000:]
    assert "STRATUS-GUEST: ssh-key=1" in console
    assert f"STRATUS-GUEST: uuid={server.id}" in console
    print(f"config drive guest: create to 'ready' in {marker_s:.1f}s;",
          [line for line in console.splitlines() if "STRATUS-GUEST" in line])  # fmt: skip

    conn.compute.delete_server(server.id)
    conn.compute.wait_for_delete(server, wait=60)
    assert not iso.exists() and not iso.parent.exists(), "config drive left behind"
    conn.compute.delete_keypair(key)
