"""Where uploaded image data lives, and the digests Glance-compatible clients and computes check.

Images are stored as ``<state_path>/images-store/<image id>`` and registered with a ``file://`` location,
which computes on the same machine read directly. ``checksum`` is MD5 (what Glance and openstacksdk compare);
``os_hash_value`` is SHA-256 with ``os_hash_algo = "sha256"`` (Glance defaults to sha512; computes verify
whichever algorithm ``os_hash_algo`` names).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import unquote, urlparse

__all__ = ["HASH_ALGO", "Digests", "ImageStore", "digest_file", "location_path"]

HASH_ALGO = "sha256"
CHUNK = 1024 * 1024


@dataclass(frozen=True)
class Digests:
    size: int
    checksum: str  # md5 hex
    os_hash_value: str  # sha256 hex
    os_hash_algo: str = HASH_ALGO

    def active_values(self, path: Path) -> dict[str, Any]:
        """The image columns of an image whose data is stored at ``path``."""
        return {
            "status": "active",
            "size": self.size,
            "checksum": self.checksum,
            "os_hash_algo": self.os_hash_algo,
            "os_hash_value": self.os_hash_value,
            "location": path.as_uri(),
        }


class _Hasher:
    def __init__(self) -> None:
        self.size = 0
        self.md5 = hashlib.md5(usedforsecurity=False)
        self.sha = hashlib.new(HASH_ALGO)

    def update(self, chunk: bytes) -> None:
        self.size += len(chunk)
        self.md5.update(chunk)
        self.sha.update(chunk)

    def digests(self) -> Digests:
        return Digests(self.size, self.md5.hexdigest(), self.sha.hexdigest())


def digest_file(path: str | os.PathLike[str]) -> Digests:
    """Size, MD5 and SHA-256 of a file (blocking: run it in a thread from async code)."""
    h = _Hasher()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return h.digests()


def location_path(location: str | None) -> Path | None:
    """The local path of a ``file://`` location; None for any other scheme."""
    if not location:
        return None
    url = urlparse(location)
    if url.scheme != "file":
        return None
    return Path(unquote(url.path))


class ImageStore:
    """The image files of this API node. Callers serialise uploads per image (the ``saving`` status does)."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)

    def path(self, image_id: str) -> Path:
        if not image_id or "/" in image_id or image_id.startswith("."):
            raise ValueError(f"not an image id: {image_id!r}")
        return self.root / image_id

    def owns(self, path: Path) -> bool:
        return path.parent == self.root

    async def write(self, image_id: str, chunks: AsyncIterator[bytes]) -> tuple[Path, Digests]:
        """Stream ``chunks`` to the image's file, hashing on the way; the file appears only when complete.

        On any failure (including cancellation when the client disconnects) the partial file is removed.
        """
        await asyncio.to_thread(self.root.mkdir, parents=True, exist_ok=True)
        final = self.path(image_id)
        part = final.with_name(f".{image_id}.{secrets.token_hex(4)}.part")
        h = _Hasher()

        def write_chunk(f: BinaryIO, chunk: bytes) -> None:
            f.write(chunk)
            h.update(chunk)

        f = await asyncio.to_thread(open, part, "wb")
        try:
            async for chunk in chunks:
                if chunk:
                    await asyncio.to_thread(write_chunk, f, chunk)
            await asyncio.to_thread(os.fsync, f.fileno())
            await asyncio.to_thread(f.close)
            await asyncio.to_thread(os.replace, part, final)
        except BaseException:
            f.close()
            with contextlib.suppress(OSError):
                part.unlink()
            raise
        return final, h.digests()

    async def remove(self, path: Path) -> None:
        """Delete an image file this store owns (idempotent); other paths are left alone."""
        if self.owns(path):
            with contextlib.suppress(FileNotFoundError):
                await asyncio.to_thread(path.unlink)
