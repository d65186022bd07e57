"""The host's image cache: images downloaded once per host, verified, then used as qcow2 backing files.

A cached file is ``<image_cache_path>/<image id>``. It only ever appears there by an atomic rename after its
checksum matched, so a file present in the cache is a verified one; downloads in progress live in
``<image id>.part-<random>`` beside it and are removed when they fail.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import tempfile
import urllib.parse
from pathlib import Path
from typing import Any, BinaryIO

import aiohttp
import tenacity
from oslo_config import cfg

from services.compute import paths
from services.compute.exceptions import ImageDownloadFailed

__all__ = ["ImageCache"]

LOG = logging.getLogger(__name__)

_CHUNK = 1024 * 1024
_HTTP_TIMEOUT = aiohttp.ClientTimeout(total=None, sock_connect=30, sock_read=60)


class _TryFailed(Exception):
    """One download attempt failed in a way another attempt may cure (network, I/O, checksum)."""


class _Verifier:
    """The checksum an image declares: Glance's ``os_hash_algo``/``os_hash_value`` first, else md5 ``checksum``."""

    def __init__(self, image: dict[str, Any]) -> None:
        algo, expected = image.get("os_hash_algo"), image.get("os_hash_value")
        if not (algo and expected and algo in hashlib.algorithms_guaranteed):
            algo, expected = ("md5", image.get("checksum")) if image.get("checksum") else (None, None)
        self.algo: str | None = algo
        self.expected: str | None = expected.lower() if expected else None
        self.size: int | None = image.get("size")

    def new(self) -> Any:
        return hashlib.new(self.algo or "sha256")

    def check(self, digest: Any, size: int) -> None:
        if self.size is not None and size != self.size:
            raise _TryFailed(f"size mismatch: expected {self.size} bytes, got {size}")
        if self.expected is not None and digest.hexdigest() != self.expected:
            raise _TryFailed(f"{self.algo} mismatch: expected {self.expected}, got {digest.hexdigest()}")


class ImageCache:
    """Fetches images into this host's cache. One instance per process: simulated hosts share it."""

    def __init__(self, conf: cfg.ConfigOpts) -> None:
        self.path = paths.image_cache_path(conf)
        self._tries = conf.compute.image_download_retries
        self._retry_interval = conf.compute.image_download_retry_interval
        self._locks: dict[str, asyncio.Lock] = {}

    def cached_path(self, image_id: str) -> Path:
        if not image_id or "/" in image_id or image_id.startswith("."):
            raise ImageDownloadFailed(f"image id {image_id!r} cannot name a cache file")
        return self.path / image_id

    async def fetch(self, image: dict[str, Any]) -> Path:
        """The verified local copy of ``image`` (a dict with ``id``, ``location`` and checksums).

        Downloads it when it is not cached yet, one download per image at a time, trying
        ``image_download_retries`` times. Raises ``ImageDownloadFailed`` naming the image, URL and reason;
        leaves no partial file behind.
        """
        image_id, url = image.get("id", ""), image.get("location") or ""
        target = self.cached_path(image_id)
        lock = self._locks.setdefault(image_id, asyncio.Lock())
        async with lock:
            if target.exists():
                return target
            if urllib.parse.urlsplit(url).scheme not in ("file", "http", "https"):
                raise ImageDownloadFailed(f"image {image_id}: location {url!r} is not a file, http or https URL")
            verifier = _Verifier(image)
            if verifier.expected is None:
                LOG.warning("image %s declares no checksum: caching %s unverified", image_id, url)
            try:
                async for attempt in tenacity.AsyncRetrying(
                    stop=tenacity.stop_after_attempt(self._tries),
                    wait=tenacity.wait_exponential(multiplier=self._retry_interval, max=30),
                    retry=tenacity.retry_if_exception_type(_TryFailed),
                    before_sleep=lambda rs: LOG.warning(
                        "image %s from %s: try %d failed (%s); retrying",
                        image_id, url, rs.attempt_number, rs.outcome.exception() if rs.outcome else "?",
                    ),
                    reraise=True,
                ):  # fmt: skip
                    with attempt:
                        await self._download(url, target, verifier)
            except _TryFailed as e:
                raise ImageDownloadFailed(f"image {image_id} from {url}: {e} (after {self._tries} tries)") from e
        LOG.info("image %s cached at %s (%s verified)", image_id, target, verifier.algo or "nothing")
        return target

    async def _download(self, url: str, target: Path, verifier: _Verifier) -> None:
        """One attempt: into a temp file beside ``target``, verified, then renamed into place."""
        await asyncio.to_thread(self.path.mkdir, parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(dir=self.path, prefix=f"{target.name}.part-")
        os.close(fd)
        tmp = Path(tmp_name)
        try:
            if url.startswith("file:"):
                digest, size = await asyncio.to_thread(_copy_file, url, tmp, verifier)
            else:
                digest, size = await _download_http(url, tmp, verifier)
            verifier.check(digest, size)
            await asyncio.to_thread(tmp.replace, target)
        finally:
            await asyncio.to_thread(tmp.unlink, missing_ok=True)


def _absorb(chunk: bytes, digest: Any, dst: BinaryIO) -> None:
    digest.update(chunk)
    dst.write(chunk)


def _copy_file(url: str, tmp: Path, verifier: _Verifier) -> tuple[Any, int]:
    """Blocking: copy the file ``url`` names to ``tmp``, hashing on the way."""
    source = Path(urllib.parse.unquote(urllib.parse.urlsplit(url).path))
    digest, size = verifier.new(), 0
    try:
        with source.open("rb") as src, tmp.open("wb") as dst:
            while chunk := src.read(_CHUNK):
                _absorb(chunk, digest, dst)
                size += len(chunk)
    except OSError as e:
        raise _TryFailed(f"cannot copy {source}: {e.strerror or e}") from e
    return digest, size


async def _download_http(url: str, tmp: Path, verifier: _Verifier) -> tuple[Any, int]:
    digest, size = verifier.new(), 0
    try:
        async with aiohttp.ClientSession(timeout=_HTTP_TIMEOUT) as session, session.get(url) as resp:
            if resp.status != 200:
                raise _TryFailed(f"HTTP {resp.status} {resp.reason}")
            with tmp.open("wb") as dst:
                async for chunk in resp.content.iter_chunked(_CHUNK):
                    await asyncio.to_thread(_absorb, chunk, digest, dst)  # hashing and writing block
                    size += len(chunk)
    except (aiohttp.ClientError, TimeoutError, OSError) as e:
        raise _TryFailed(f"download failed: {type(e).__name__}: {e}") from e
    return digest, size
