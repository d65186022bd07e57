"""Compute unit-test fixtures: a config in a temp state_path, the real libvirt test:/// driver, the fakes of
``fakes.py`` for the conductor and network stubs, and a manager wired to all of them."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from common import config
from common.context import RequestContext
from services.compute.imagecache import ImageCache
from services.compute.manager import ComputeManager
from services.compute.virt.libvirt.driver import LibvirtDriver
from tests.unit.compute.fakes import HOST, FakeConductor, FakeNetwork, ImageFile


@pytest.fixture
def conf(tmp_path: Path):
    conf = config.new_conf()
    conf(args=[], default_config_files=[])
    conf.set_override("state_path", str(tmp_path / "state"))
    conf.set_override("host", HOST)
    conf.set_override("connection_uri", "test:///default", group="compute")
    conf.set_override("image_download_retry_interval", 0.0, group="compute")
    conf.set_override("shutdown_timeout", 1.0, group="compute")
    yield conf
    conf.reset()


@pytest_asyncio.fixture
async def driver(conf) -> AsyncIterator[LibvirtDriver]:
    drv = await LibvirtDriver.create(conf, HOST)
    try:
        yield drv
    finally:
        await drv.close()


@pytest.fixture
def image_file(tmp_path: Path) -> ImageFile:
    data = b"stratus test image\n" * 1000
    path = tmp_path / "source" / "image.bin"
    path.parent.mkdir()
    path.write_bytes(data)
    return ImageFile(path, data)


@pytest.fixture
def conductor() -> FakeConductor:
    return FakeConductor()


@pytest.fixture
def network() -> FakeNetwork:
    return FakeNetwork()


@pytest.fixture
def manager(conf, driver, conductor, network) -> ComputeManager:
    return ComputeManager(conf, HOST, driver, conductor, network, ImageCache(conf), broker_node=lambda: "mq1:5672")


@pytest.fixture
def ctx() -> RequestContext:
    return RequestContext(user_id="u1", project_id="p1", roles=("member",))
