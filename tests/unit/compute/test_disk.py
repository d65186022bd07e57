import shutil
import subprocess

import pytest

from services.compute.exceptions import DiskError
from services.compute.virt import disk

pytestmark = pytest.mark.skipif(shutil.which("qemu-img") is None, reason="qemu-img is not installed")

MiB = 1024**2


def make_image(path, size="64M", fmt="qcow2", backing=None):
    argv = ["qemu-img", "create", "-q", "-f", fmt]
    if backing:
        argv += ["-F", "qcow2", "-b", str(backing)]
    subprocess.run([*argv, str(path), size], check=True)
    return path


async def test_overlay_is_grown_to_the_flavor_disk(tmp_path):
    base = make_image(tmp_path / "base")
    overlay = tmp_path / "disk"
    await disk.create_overlay(base, "qcow2", overlay, size_gb=1)
    info = await disk.image_info(overlay, "qcow2")
    assert info["virtual-size"] == disk.GiB
    assert info["backing-filename"] == str(base)
    assert info["backing-filename-format"] == "qcow2"


async def test_zero_disk_keeps_the_image_size(tmp_path):
    base = make_image(tmp_path / "base")
    overlay = tmp_path / "disk"
    await disk.create_overlay(base, "qcow2", overlay, size_gb=0)
    assert (await disk.image_info(overlay, "qcow2"))["virtual-size"] == 64 * MiB


async def test_raw_images_can_back_an_overlay(tmp_path):
    base = make_image(tmp_path / "base.raw", fmt="raw")
    overlay = tmp_path / "disk"
    await disk.create_overlay(base, "raw", overlay, size_gb=1)
    assert (await disk.image_info(overlay, "qcow2"))["backing-filename-format"] == "raw"


async def test_flavor_disk_smaller_than_the_image_is_refused(tmp_path):
    base = make_image(tmp_path / "base", size="2G")
    overlay = tmp_path / "disk"
    with pytest.raises(DiskError, match="smaller than the image's virtual size of 2.00 GiB"):
        await disk.create_overlay(base, "qcow2", overlay, size_gb=1)
    assert not overlay.exists()


async def test_declared_format_must_match(tmp_path):
    base = make_image(tmp_path / "base.raw", fmt="raw")
    with pytest.raises(DiskError, match="qemu-img info failed"):
        await disk.create_overlay(base, "qcow2", tmp_path / "disk", size_gb=1)


async def test_image_with_its_own_backing_file_is_refused(tmp_path):
    inner = make_image(tmp_path / "inner")
    base = make_image(tmp_path / "base", backing=inner)
    with pytest.raises(DiskError, match="backing file of its own"):
        await disk.create_overlay(base, "qcow2", tmp_path / "disk", size_gb=1)


async def test_unsupported_format_is_refused(tmp_path):
    with pytest.raises(DiskError, match="'iso' cannot back a disk"):
        await disk.create_overlay(tmp_path / "x.iso", "iso", tmp_path / "disk", size_gb=1)
