"""``stratus-network``: serve the ``network`` topic until SIGTERM, then drain and close cleanly."""

from __future__ import annotations

import asyncio
import logging
import signal
import sys

from oslo_config import cfg

from common import config, log
from common.db.pool import Database
from common.rpc import Transport
from common.rpc.server import serve_topic
from common.service import run_daemon
from services.network import dhcp
from services.network.manager import NetworkManager
from services.network.rpcapi import NetworkAPI

__all__ = ["main", "serve"]

LOG = logging.getLogger(__name__)
SERVICE = "stratus-network"


DRAIN_SECONDS = 10.0  # how long a stopping service lets in-flight calls finish


async def serve(conf: cfg.ConfigOpts, stop: asyncio.Event | None = None) -> None:
    """Run the network service until ``stop`` is set (without one: until SIGTERM or SIGINT).

    On stop: in-flight calls get up to ``DRAIN_SECONDS`` to finish and answer, then the consumer goes
    (unacknowledged messages return to the queue for another network node), then the broker connection, then
    the database pool.
    """
    signals = (signal.SIGTERM, signal.SIGINT) if stop is None else ()
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    db = await Database.connect(conf)
    try:
        transport = await Transport.connect(conf, service=SERVICE)
    except BaseException:
        await db.close()
        raise
    try:
        for sig in signals:
            loop.add_signal_handler(sig, stop.set)
        agent = None
        if conf.network.serve_dhcp:
            # DHCP first: it serves guests that exist already, whatever happens to the broker.
            agent = dhcp.DhcpAgent(conf, db, list(conf.config_file))
            await agent.start()
        dispatcher = await serve_topic(transport, NetworkAPI.TOPIC, NetworkManager(conf, db))
        LOG.info("serving topic %r on broker node %s", NetworkAPI.TOPIC, transport.broker_node)
        await stop.wait()
        if agent is not None:
            await agent.stop()  # dnsmasq and the metadata servers keep serving through the restart
        LOG.info("stopping: letting %d in-flight call(s) finish", len(dispatcher.inflight))
        if dispatcher.inflight:
            await asyncio.wait(list(dispatcher.inflight), timeout=DRAIN_SECONDS)
        await transport.remove_consumers()
    finally:
        for sig in signals:
            loop.remove_signal_handler(sig)
        await transport.close()
        await db.close()
    LOG.info("network service stopped")


def main() -> None:
    argv = sys.argv[1:]
    teardown = "--teardown" in argv
    conf = config.parse_args([a for a in argv if a != "--teardown"], prog=SERVICE)
    log.setup(conf, SERVICE)
    if teardown:
        # Decommission this network node: every dnsmasq, metadata server, namespace and empty bridge it runs.
        done = asyncio.run(dhcp.teardown_all(conf.state_path))
        LOG.info("tore down DHCP/DNS/metadata of %d network(s): %s", len(done), ", ".join(done) or "none")
        return
    run_daemon(conf, serve(conf))


if __name__ == "__main__":
    main()
