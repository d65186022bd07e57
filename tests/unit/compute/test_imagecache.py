import asyncio
import hashlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest
import pytest_asyncio
from aiohttp import web

from services.compute.exceptions import ImageDownloadFailed
from services.compute.imagecache import ImageCache


def cache_files(cache: ImageCache) -> list[str]:
    return sorted(p.name for p in cache.path.iterdir()) if cache.path.exists() else []


async def test_file_url_is_copied_and_verified(conf, image_file):
    cache = ImageCache(conf)
    image = image_file.image()
    path = await cache.fetch(image)
    assert path == cache.path / image["id"]
    assert path.read_bytes() == image_file.data
    assert cache_files(cache) == [image["id"]]


async def test_md5_checksum_is_used_without_os_hash(conf, image_file):
    cache = ImageCache(conf)
    image = image_file.image(os_hash_algo=None, os_hash_value=None)
    assert (await cache.fetch(image)).read_bytes() == image_file.data


async def test_sha256_mismatch_fails_after_every_try_and_leaves_nothing(conf, image_file):
    conf.set_override("image_download_retries", 3, group="compute")
    cache = ImageCache(conf)
    image = image_file.image(os_hash_value="0" * 64)
    with pytest.raises(ImageDownloadFailed) as err:
        await cache.fetch(image)
    message = err.value.message
    assert image["id"] in message and image_file.url in message
    assert "sha256 mismatch" in message and "after 3 tries" in message
    assert cache_files(cache) == []


async def test_md5_mismatch_names_md5(conf, image_file):
    cache = ImageCache(conf)
    image = image_file.image(os_hash_algo=None, os_hash_value=None, checksum="0" * 32)
    with pytest.raises(ImageDownloadFailed, match="md5 mismatch"):
        await cache.fetch(image)


async def test_size_mismatch_is_caught_before_the_hash(conf, image_file):
    cache = ImageCache(conf)
    with pytest.raises(ImageDownloadFailed, match="size mismatch"):
        await cache.fetch(image_file.image(size=1))


async def test_missing_file_names_the_path(conf, image_file, tmp_path):
    cache = ImageCache(conf)
    image = image_file.image(location=(tmp_path / "nope.qcow2").as_uri())
    with pytest.raises(ImageDownloadFailed, match="nope.qcow2"):
        await cache.fetch(image)


async def test_unsupported_scheme_fails_at_once(conf, image_file):
    conf.set_override("image_download_retries", 5, group="compute")
    cache = ImageCache(conf)
    with pytest.raises(ImageDownloadFailed, match="not a file, http or https URL"):
        await cache.fetch(image_file.image(location="ftp://example.invalid/x.qcow2"))


async def test_a_cached_image_is_not_downloaded_again(conf, image_file):
    cache = ImageCache(conf)
    image = image_file.image()
    await cache.fetch(image)
    image_file.path.unlink()  # the source is gone: only the cache can answer
    assert (await cache.fetch(image)).read_bytes() == image_file.data


@dataclass
class ImageServer:
    """A local HTTP server for one image; ``fail_first`` requests get a 503."""

    data: bytes
    fail_first: int = 0
    delay: float = 0.0
    requests: list[str] = field(default_factory=list)
    url: str = ""

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.requests.append(request.path)
        if len(self.requests) <= self.fail_first:
            return web.Response(status=503, text="busy")
        resp = web.StreamResponse()
        await resp.prepare(request)
        for i in range(0, len(self.data), 4096):
            await resp.write(self.data[i : i + 4096])
            if self.delay:
                await asyncio.sleep(self.delay)
        await resp.write_eof()
        return resp

    def image(self, **overrides):
        return {
            "id": "img-http",
            "location": self.url,
            "size": len(self.data),
            "os_hash_algo": "sha256",
            "os_hash_value": hashlib.sha256(self.data).hexdigest(),
            **overrides,
        }


@pytest_asyncio.fixture
async def image_server() -> AsyncIterator[ImageServer]:
    server = ImageServer(data=bytes(range(256)) * 4096)  # 1 MiB
    app = web.Application()
    app.router.add_get("/images/{name}", server.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    server.url = f"http://127.0.0.1:{port}/images/guest.qcow2"
    try:
        yield server
    finally:
        await runner.cleanup()


async def test_http_download_streams_and_verifies(conf, image_server):
    cache = ImageCache(conf)
    path = await cache.fetch(image_server.image())
    assert path.read_bytes() == image_server.data
    assert len(image_server.requests) == 1


async def test_http_retries_transient_failures(conf, image_server):
    conf.set_override("image_download_retries", 3, group="compute")
    image_server.fail_first = 2
    cache = ImageCache(conf)
    path = await cache.fetch(image_server.image())
    assert path.read_bytes() == image_server.data
    assert len(image_server.requests) == 3


async def test_http_gives_up_after_the_configured_tries(conf, image_server):
    conf.set_override("image_download_retries", 2, group="compute")
    image_server.fail_first = 10
    cache = ImageCache(conf)
    with pytest.raises(ImageDownloadFailed) as err:
        await cache.fetch(image_server.image())
    assert "HTTP 503" in err.value.message and image_server.url in err.value.message
    assert len(image_server.requests) == 2
    assert cache_files(cache) == []


async def test_unreachable_server_is_a_clear_failure(conf, image_server):
    conf.set_override("image_download_retries", 1, group="compute")
    cache = ImageCache(conf)
    with pytest.raises(ImageDownloadFailed, match="download failed"):
        await cache.fetch(image_server.image(location="http://127.0.0.1:9/none.qcow2"))


async def test_concurrent_fetches_of_one_image_download_it_once(conf, image_server):
    image_server.delay = 0.001
    cache = ImageCache(conf)
    paths = await asyncio.gather(*(cache.fetch(image_server.image()) for _ in range(5)))
    assert len(set(paths)) == 1
    assert len(image_server.requests) == 1
    assert cache_files(cache) == ["img-http"]
