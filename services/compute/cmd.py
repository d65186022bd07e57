"""``stratus-compute``: serve ``compute.<host>`` for this host (or for N simulated hosts on ``test:///``).

Each host gets its own libvirt connection, manager, topic and capacity loop; all share one transport and one
image cache. SIGTERM (see ``common.service``) stops consuming, lets in-flight operations finish, then closes
the drivers.
"""

from __future__ import annotations

import asyncio
import logging

from oslo_config import cfg

from common import service
from common.context import RequestContext
from common.rpc import Transport
from services.compute.imagecache import ImageCache
from services.compute.manager import ComputeManager
from services.compute.rpcapi import topic_for
from services.compute.virt.libvirt.driver import LibvirtDriver
from services.network.rpcapi import NetworkAPI
from services.scheduler.rpcapi import ConductorAPI

__all__ = ["NAME", "compute_hosts", "main", "setup"]

LOG = logging.getLogger(__name__)
NAME = "stratus-compute"


def compute_hosts(conf: cfg.ConfigOpts) -> list[str]:
    """The host names this process serves: ``<host>`` or, simulated, ``<host>-0`` ... ``<host>-(N-1)``."""
    n = conf.compute.simulated_hosts
    if n == 0:
        return [conf.host]
    if not conf.compute.connection_uri.startswith("test:"):
        raise SystemExit(
            f"[compute] simulated_hosts = {n} needs a test:/// connection_uri, not {conf.compute.connection_uri}"
        )
    return [f"{conf.host}-{i}" for i in range(n)]


async def report_periodically(manager: ComputeManager, interval: float) -> None:
    """Capacity now, then whenever ``interval`` seconds have passed since the host's last report, until
    cancelled. A report sent after a change counts, so a busy host sends no more reports than an idle one.
    The report is also this service's heartbeat: the scheduler that persists reports marks the service alive
    (``services.last_seen_at``), and no two reports are further apart than ``interval``."""
    loop = asyncio.get_running_loop()
    while True:
        wait = manager.last_report + interval - loop.time()
        if wait > 0:
            await asyncio.sleep(wait)
            continue
        ctx = RequestContext.admin()
        token = ctx.bind()
        try:
            await manager.report_capacity(ctx)
        except Exception as e:  # the next round retries; a missed report heals itself
            LOG.warning("periodic report of %s failed: %s", manager.host, e)
        finally:
            token.var.reset(token)


async def setup(conf: cfg.ConfigOpts, transport: Transport, svc: service.Service) -> None:
    client = transport.client()
    conductor = ConductorAPI(client)
    network = NetworkAPI(client)
    image_cache = ImageCache(conf)
    for host in compute_hosts(conf):
        driver = await LibvirtDriver.create(conf, host)
        svc.on_close(driver.close)
        manager = ComputeManager(
            conf, host, driver, conductor, network, image_cache, broker_node=lambda: transport.broker_node
        )
        await transport.serve(topic_for(host), manager)
        svc.on_close(manager.close)
        svc.spawn(report_periodically(manager, conf.compute.report_interval), f"capacity-{host}")
        LOG.info("serving %s (%s, domain type %s)", topic_for(host), conf.compute.connection_uri, driver.virt_type)


def main() -> None:
    service.main(NAME, setup)


if __name__ == "__main__":
    main()
