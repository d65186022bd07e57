"""The network service as it runs (``cmd.serve``) on a real broker: calls through ``NetworkAPI``, clean stop."""

from __future__ import annotations

import asyncio

import pytest

from common import exceptions
from common.context import RequestContext
from common.db import networks as db_networks
from common.db.pool import Database
from common.rpc import Transport
from services.network import cmd
from services.network.rpcapi import NetworkAPI
from tests.functional.network.conftest import make_conf, server_row

pytestmark = pytest.mark.functional

CTX = RequestContext(project_id="proj", roles=("member",))


async def _wait_for_consumer(api: NetworkAPI, server: asyncio.Task, timeout: float = 30) -> None:
    """Until the service consumes its queue, a call is unroutable (NotFound from the broker)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        if server.done():
            server.result()  # re-raise why the service died
        try:
            await api.deallocate_for_instance(CTX, "probe")
            return
        except exceptions.NotFound:
            if asyncio.get_running_loop().time() > deadline:
                raise
            await asyncio.sleep(0.1)


async def test_host_ports_and_deallocate_over_rpc(net_dsn: str, rabbit_vhost, db: Database, net_conf):
    """What a compute asks of the network service: the firewall view of its host's ports, and the release of
    an instance's ports when it is deleted."""
    conf = make_conf(net_dsn, transport_url=rabbit_vhost.transport_url, host="net-1")
    net, _ = await db.run(
        lambda conn: db_networks.create_network_with_subnet(conn, "proj", "private", "10.50.0.0/29", False)
    )

    async def boot(conn):  # as the API's create and the scheduler's claim do it
        await server_row(conn, "inst-1", "proj")
        ports = await db_networks.attach_instance_ports(
            conn, instance_id="inst-1", project_id="proj", hostname="vm1", networks=[{"uuid": net["id"]}],
            base_mac=net_conf.network.base_mac,
        )  # fmt: skip
        await db_networks.bind_instance_ports(conn, "inst-1", "host-a")
        return ports

    [port] = await db.run(boot)
    stop = asyncio.Event()
    server = asyncio.create_task(cmd.serve(conf, stop), name="network-service")
    transport = await Transport.connect(conf, service="test-compute")
    try:
        api = NetworkAPI(transport.client(), timeout=15)
        await _wait_for_consumer(api, server)
        [view] = await api.get_host_ports(CTX, host="host-a")
        assert (view["id"], view["mac_address"], view["ips"]) == (port["id"], port["mac_address"], ["10.50.0.2"])
        assert view["tap"] == f"tap{port['id'][:11]}" and view["bridge"] == net["bridge"]
        assert await api.get_host_ports(CTX, host="host-b") == []
        result = await api.deallocate_for_instance(CTX, instance_id="inst-1")
        assert result == {"deleted": [port["id"]], "unbound": []}
        assert await api.deallocate_for_instance(CTX, instance_id="inst-1") == {"deleted": [], "unbound": []}
        assert await api.get_host_ports(CTX, host="host-a") == []
    finally:
        stop.set()
        await asyncio.wait_for(server, 30)
        await transport.close()
    assert server.exception() is None


async def test_service_process_serves_and_stops_on_sigterm(net_dsn: str, rabbit_vhost, services, tmp_path):
    """``python -m services.network.cmd`` as a real process: it answers calls, and SIGTERM ends it with 0."""
    from tests.fixtures.processes import write_config

    config = write_config(
        tmp_path / "network.conf",
        {
            "DEFAULT": {"transport_url": rabbit_vhost.transport_url, "host": "net-2"},
            "database": {"connection": net_dsn},
        },
    )
    proc = services.start("network", config)
    await proc.await_log(r"serving topic 'network'", timeout=30)
    conf = make_conf(net_dsn, transport_url=rabbit_vhost.transport_url)
    transport = await Transport.connect(conf, service="test-compute")
    try:
        api = NetworkAPI(transport.client(), timeout=15)
        assert await api.deallocate_for_instance(CTX, instance_id="nothing") == {"deleted": [], "unbound": []}
    finally:
        await transport.close()
    assert proc.stop(timeout=20) == 0
    assert "network service stopped" in proc.read_log()
