"""``stratus-api``: serve the API; on SIGTERM drain (503 on /healthcheck), finish in-flight requests, exit."""

from __future__ import annotations

import asyncio
import logging
import signal
import sys

from aiohttp import web
from oslo_config import cfg

from common import config, log
from common.db.pool import Database
from common.rpc import Transport
from common.service import run_daemon, settle_heap
from services.api.app import DRAINING, create_app

LOG = logging.getLogger(__name__)


async def serve(conf: cfg.ConfigOpts) -> None:
    db = await Database.connect(conf)
    transport = await Transport.connect(conf, service="stratus-api")
    app = create_app(conf, db, transport)
    runner = web.AppRunner(app, handle_signals=False, access_log=None, shutdown_timeout=30)
    await runner.setup()
    site = web.TCPSite(runner, conf.api.listen_host, conf.api.listen_port, reuse_address=True)
    await site.start()
    settle_heap()
    LOG.info("API listening on %s:%s", conf.api.listen_host, conf.api.listen_port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    LOG.info("draining for %.1fs before shutdown", conf.api.drain_seconds)
    app[DRAINING].set()
    await asyncio.sleep(conf.api.drain_seconds)
    await runner.cleanup()  # stops accepting, waits for in-flight requests
    await transport.close()
    await db.close()
    LOG.info("API stopped")


def main() -> None:
    conf = config.parse_args(sys.argv[1:], prog="stratus-api")
    log.setup(conf, "stratus-api")
    run_daemon(conf, serve(conf))


if __name__ == "__main__":
    main()
