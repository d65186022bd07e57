import os
import subprocess
import tempfile
from pathlib import Path

import pytest

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


@pytest.fixture(scope="module")
def qemu_cloud(postgres, rabbit, libvirtd, guest_image):
    """A private Stratus whose one compute drives real QEMU guests through the system libvirtd."""
    with tempfile.TemporaryDirectory(prefix="stratus-int-") as tmp:
        c = Cloud(Path(tmp), postgres, rabbit, compute_hosts=1, connection_uri="qemu:///system",
                  compute_overrides={"virt_type": "auto", "vcpus": 2, "memory_mb": 4096, "local_gb": 20,
                                     "reserved_host_memory_mb": 0},
                  image_file=guest_image)  # fmt: skip
        c.start(timeout=90)
        try:
            yield c
        finally:
            c.stop()
            for net in c.bridges:
                subprocess.run(["ip", "link", "del", net], capture_output=True)
