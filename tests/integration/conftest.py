import asyncio
import os
import subprocess
import tempfile
from pathlib import Path

import pytest

from services.compute import firewall
from services.network import dhcp
from tests.fixtures.cloud import Cloud

ROOT = Path(__file__).resolve().parents[2]
IMAGE_CACHE = Path(os.environ.get("STRATUS_TEST_IMAGE_DIR", "/var/tmp/stratus-test-images"))


@pytest.fixture(scope="session")
def guest_image() -> Path:
    """The tiny guest image, built from Debian packages by devstack's builder (cached across runs)."""
    IMAGE_CACHE.mkdir(parents=True, exist_ok=True)
    image = IMAGE_CACHE / "tiny.qcow2"
    subprocess.run(["bash", str(ROOT / "devstack/tools/build-guest-image.sh"), str(image)], check=True)
    return image


@pytest.fixture(scope="session", autouse=True)
def _sweep_network_orphans():
    """Session-end sweep: DHCP/metadata processes whose cloud's directory is gone, with their namespaces."""
    yield
    asyncio.run(dhcp.sweep_orphans())


@pytest.fixture(scope="module")
def qemu_cloud(postgres, rabbit, libvirtd, guest_image):
    """A private Stratus whose one compute drives real QEMU guests through the system libvirtd."""
    with tempfile.TemporaryDirectory(prefix="stratus-int-") as tmp:
        c = Cloud(Path(tmp), postgres, rabbit, compute_hosts=1, connection_uri="qemu:///system",
                  compute_overrides={"virt_type": "auto", "vcpus": 2, "memory_mb": 4096, "local_gb": 20,
                                     "reserved_host_memory_mb": 0},
                  image_file=guest_image,
                  # The network service is the network node: dnsmasq and metadata per network namespace.
                  extra_config={"network": {"serve_dhcp": "true", "dhcp_resync_interval": 5}})  # fmt: skip
        try:
            c.start(timeout=90)
            yield c
        finally:
            c.stop()
            # dnsmasq and the metadata servers outlive the network service by design: remove them with their
            # namespaces, veths and bridges.
            asyncio.run(dhcp.teardown_all(Path(tmp) / "state"))
            table = firewall.table_name("compute", str(Path(tmp) / "state"))
            for family in ("bridge", "inet"):
                subprocess.run(["nft", "delete", "table", family, table], capture_output=True)
            for net in c.bridges:
                subprocess.run(["ip", "link", "del", net], capture_output=True)
