"""The config drive: its documents (pure) and a real ISO 9660 image read back with ``isoinfo``."""

import base64
import json
import shutil
import subprocess
import time

import pytest

from services.compute.exceptions import DiskError
from services.compute.virt import configdrive

INSTANCE = {
    "id": "8d3c1a52-3f6e-4a8e-9a57-0b9b6f4c2d11",
    "name": "cd vm",
    "hostname": "cd-vm",
    "project_id": "p1",
    "key_name": "k1",
    "key_data": "ssh-ed25519 AAAAC3Nza k1@test",
    "user_data": base64.b64encode(b"#!/bin/sh\necho hi\n").decode(),
    "metadata": {"role": "db"},
    "availability_zone": None,
    "launch_index": 0,
    "image_id": "img-1",
    "flavor": {"name": "m1.tiny"},
    "reservation_id": "r-1",
    "config_drive": True,
}
PORTS = [
    {"id": "0b8e1c9a-5d1f-4c1e-8f39-2d6f8a1b7c01", "network_id": "n1", "mac_address": "fa:16:3e:00:00:01",
     "fixed_ips": [{"subnet_id": "s1", "ip_address": "10.0.0.5"}], "bridge": "brqn1", "mtu": 1450,
     "cidr": "10.0.0.0/24", "gateway_ip": "10.0.0.1", "dns_name": "cd-vm", "dns_domain": "example.org."},
]  # fmt: skip

needs_isotools = pytest.mark.skipif(
    not shutil.which("isoinfo") or not (shutil.which("genisoimage") or shutil.which("xorriso")),
    reason="genisoimage (isoinfo) not installed: devstack/tools/install-prereqs.sh",
)


def test_documents_are_the_metadata_servers_from_the_build_message():
    files = configdrive.drive_files(INSTANCE, PORTS, "stratus.local")
    meta = json.loads(files["openstack/latest/meta_data.json"])
    assert meta["uuid"] == INSTANCE["id"] and meta["name"] == "cd vm"
    assert meta["hostname"] == "cd-vm.example.org"  # the network's domain wins over the default
    assert meta["public_keys"] == {"k1": INSTANCE["key_data"]} and meta["meta"] == {"role": "db"}
    net = json.loads(files["openstack/latest/network_data.json"])
    assert net["links"][0]["ethernet_mac_address"] == "fa:16:3e:00:00:01" and net["links"][0]["mtu"] == 1450
    assert net["networks"][0]["ip_address"] == "10.0.0.5" and net["networks"][0]["netmask"] == "255.255.255.0"
    assert net["networks"][0]["routes"][0]["gateway"] == "10.0.0.1"
    assert files["openstack/latest/user_data"] == b"#!/bin/sh\necho hi\n"
    assert files["openstack/2012-08-10/meta_data.json"] == files["openstack/latest/meta_data.json"]
    ec2 = json.loads(files["ec2/latest/meta-data.json"])
    assert ec2["local-ipv4"] == "10.0.0.5" and ec2["instance-id"] == INSTANCE["id"]
    assert ec2["public-keys"]["0=k1"]["openssh-key"] == INSTANCE["key_data"]


def test_no_user_data_no_file_and_default_domain():
    files = configdrive.drive_files({**INSTANCE, "user_data": None}, [{**PORTS[0], "dns_domain": ""}], "d.test")
    assert "openstack/latest/user_data" not in files and "ec2/latest/user-data" not in files
    assert json.loads(files["openstack/latest/meta_data.json"])["hostname"] == "cd-vm.d.test"


def test_required_when_asked_or_forced():
    assert configdrive.required({"config_drive": True}, False)
    assert configdrive.required({"config_drive": False}, True)
    assert not configdrive.required({}, False)


def _isoinfo(iso, *args):
    return subprocess.run(["isoinfo", "-i", str(iso), *args], capture_output=True, check=True).stdout


@needs_isotools
async def test_iso_is_labelled_config_2_and_holds_every_file(tmp_path):
    files = configdrive.drive_files(INSTANCE, PORTS, "stratus.local")
    out = tmp_path / "disk.config"
    started = time.monotonic()
    await configdrive.make_iso(out, files)
    print(f"config drive ISO built in {(time.monotonic() - started) * 1000:.0f} ms ({out.stat().st_size} bytes)")
    assert "Volume id: config-2" in _isoinfo(out, "-d").decode()
    names = set(_isoinfo(out, "-R", "-f").decode().split())
    for name in files:
        assert f"/{name}" in names
    meta = _isoinfo(out, "-R", "-x", "/openstack/latest/meta_data.json")
    assert json.loads(meta)["hostname"] == "cd-vm.example.org"
    await configdrive.make_iso(out, files)  # idempotent: replaced in place
    assert not list(tmp_path.glob(".*.tmp"))


async def test_tool_failure_is_a_disk_error_and_leaves_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr(configdrive, "_command", lambda out, src: ["false"])
    with pytest.raises(DiskError, match="failed making the config drive"):
        await configdrive.make_iso(tmp_path / "disk.config", {"a": b"b"})
    assert list(tmp_path.iterdir()) == []
