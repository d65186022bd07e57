"""Instance disks: qcow2 overlays on cached images, made with ``qemu-img`` as an asyncio subprocess.

Image formats are always stated (``-f``/``-F``), never probed: a guest-written raw image must not be
mistaken for a qcow2 that points at a host file.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from services.compute.exceptions import DiskError

__all__ = ["GiB", "SUPPORTED_FORMATS", "create_overlay", "image_info"]

GiB = 1024**3
SUPPORTED_FORMATS = ("qcow2", "raw")


async def _qemu_img(*args: str) -> bytes:
    try:
        proc = await asyncio.create_subprocess_exec(
            "qemu-img", *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
        )
    except OSError as e:
        raise DiskError(f"qemu-img could not run: {e}") from e
    stdout, stderr = await proc.communicate()
    if proc.returncode != 0:
        raise DiskError(f"qemu-img {args[0]} failed: {stderr.decode(errors='replace').strip()}")
    return stdout


async def image_info(path: Path, fmt: str) -> dict[str, Any]:
    """``qemu-img info`` of ``path`` read as ``fmt``; raises ``DiskError`` when it is not that format."""
    return json.loads(await _qemu_img("info", "-f", fmt, "--output=json", str(path)))


async def create_overlay(backing: Path, backing_format: str, overlay: Path, size_gb: int) -> None:
    """Create the qcow2 ``overlay`` on ``backing``, grown to ``size_gb`` GiB when that is larger than the
    image (0: the image's own size). Raises ``DiskError``; leaves no overlay behind when it does."""
    if backing_format not in SUPPORTED_FORMATS:
        raise DiskError(f"image format {backing_format!r} cannot back a disk (supported: {SUPPORTED_FORMATS})")
    info = await image_info(backing, backing_format)
    if info.get("backing-filename"):
        raise DiskError(f"image {backing.name} has a backing file of its own; refusing to use it")
    virtual_size = int(info["virtual-size"])
    if size_gb and size_gb * GiB < virtual_size:
        raise DiskError(
            f"flavor disk of {size_gb} GiB is smaller than the image's virtual size of {virtual_size / GiB:.2f} GiB"
        )
    args = ["create", "-q", "-f", "qcow2", "-F", backing_format, "-b", str(backing), str(overlay)]
    if size_gb * GiB > virtual_size:
        args.append(f"{size_gb}G")
    try:
        await _qemu_img(*args)
    except DiskError:
        await asyncio.to_thread(overlay.unlink, missing_ok=True)
        raise
