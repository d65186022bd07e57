"""An instance's ports against a real PostgreSQL: made with the instance (``attach_instance_ports``), bound by
the claim (``bind_instance_ports``), read back for a reschedule (``instance_ports``) and given back
(``release_instance_ports``, which the network service's ``deallocate_for_instance`` runs). docs/internals.md."""

from __future__ import annotations

import asyncpg
import pytest

from common import exceptions
from common.context import RequestContext
from common.db import networks as db_networks
from common.db.pool import Database
from services.network.manager import NetworkManager
from tests.functional.network.conftest import server_row

pytestmark = pytest.mark.functional

CTX = RequestContext(project_id="proj", roles=("member",))
PORT_KEYS = {"id", "network_id", "mac_address", "fixed_ips", "bridge", "mtu", "cidr", "gateway_ip", "dns_name",
             "dns_domain"}  # fmt: skip


@pytest.fixture
def manager(net_conf, db: Database) -> NetworkManager:
    return NetworkManager(net_conf, db)


async def _net(db: Database, name: str, cidr: str, project: str = "proj", shared: bool = False):
    return await db.run(lambda conn: db_networks.create_network_with_subnet(conn, project, name, cidr, shared))


async def _attach(db: Database, net_conf, instance_id: str, networks, project="proj"):
    async def work(conn):
        await server_row(conn, instance_id, project)
        return await db_networks.attach_instance_ports(
            conn, instance_id=instance_id, project_id=project, hostname="vm1", networks=networks,
            base_mac=net_conf.network.base_mac,
        )  # fmt: skip

    return await db.run(work)


async def _port_row(db: Database, port_id: str):
    async with db.transaction() as conn:
        return await db_networks.get_port(conn, port_id)


async def test_attach_returns_the_contract_port_dicts_unbound(db: Database, net_conf):
    net, subnet = await _net(db, "private", "10.1.0.0/24")
    [port] = await _attach(db, net_conf, "inst-1", [{"uuid": net["id"]}])
    assert set(port) == PORT_KEYS
    assert port["network_id"] == net["id"]
    assert port["mac_address"].startswith("fa:16:3e:")
    assert port["fixed_ips"] == [{"subnet_id": subnet["id"], "ip_address": "10.1.0.2"}]
    assert port["bridge"] == "brq" + net["id"][:11]
    assert (port["mtu"], port["cidr"], port["gateway_ip"], port["dns_name"]) == (1500, "10.1.0.0/24", "10.1.0.1", "vm1")
    row = await _port_row(db, port["id"])
    assert (row["device_id"], row["device_owner"], row["binding_host"], row["status"], row["auto_delete"]) == (
        "inst-1", "compute:nova", None, "DOWN", True,
    )  # fmt: skip


async def test_bind_follows_the_claim_and_reads_back_in_request_order(db: Database, net_conf):
    """NIC order matters to the guest: a reschedule reads the ports back in the order the request named them."""
    a, _ = await _net(db, "a", "10.6.0.0/24")
    b, _ = await _net(db, "b", "10.7.0.0/24")
    user_port, _, _ = await db.run(
        lambda conn: db_networks.create_port(
            conn, network_id=a["id"], project_id="proj", base_mac=net_conf.network.base_mac
        )
    )
    request = [{"uuid": b["id"]}, {"uuid": a["id"]}, {"port": user_port["id"], "uuid": a["id"]}, {"uuid": b["id"]}]
    made = await _attach(db, net_conf, "inst-1", request)
    assert [p["network_id"] for p in made] == [b["id"], a["id"], a["id"], b["id"]]
    assert made[2]["id"] == user_port["id"]
    for host in ("host-a", "host-b"):  # a rescheduled build's ports follow it
        await db.run(lambda conn, host=host: db_networks.bind_instance_ports(conn, "inst-1", host))
        rows = [await _port_row(db, p["id"]) for p in made]
        assert {(r["binding_host"], r["status"]) for r in rows} == {(host, "ACTIVE")}
    assert await db.run(lambda conn: db_networks.instance_ports(conn, "inst-1", request)) == made


async def test_fixed_ip_request(db: Database, net_conf):
    net, _ = await _net(db, "private", "10.1.0.0/24")
    ports = await _attach(db, net_conf, "inst-1", [{"uuid": net["id"], "fixed_ip": "10.1.0.33"}])
    assert ports[0]["fixed_ips"][0]["ip_address"] == "10.1.0.33"


async def test_attach_is_all_or_nothing(db: Database, net_conf):
    net, _ = await _net(db, "private", "10.1.0.0/24")
    tiny, _ = await _net(db, "tiny", "10.3.0.0/30")  # one address
    await _attach(db, net_conf, "inst-1", [{"uuid": tiny["id"]}])
    with pytest.raises(exceptions.IpAddressExhausted, match="10.3.0.0/30"):
        await _attach(db, net_conf, "inst-2", [{"uuid": net["id"]}, {"uuid": tiny["id"]}])
    async with db.transaction() as conn:
        assert await db_networks.ports_for_device(conn, "inst-2") == []


async def test_user_port_is_attached_then_detached_not_deleted(manager: NetworkManager, db: Database, net_conf):
    net, _ = await _net(db, "private", "10.1.0.0/24")
    user_port, _, _ = await db.run(
        lambda conn: db_networks.create_port(
            conn, network_id=net["id"], project_id="proj", base_mac=net_conf.network.base_mac, name="mine"
        )
    )
    ports = await _attach(db, net_conf, "inst-1", [{"port": user_port["id"], "uuid": net["id"]}, {"uuid": net["id"]}])
    assert ports[0]["id"] == user_port["id"]
    made = ports[1]["id"]
    # attached ports cannot be given to a second instance
    with pytest.raises(exceptions.Conflict, match="in use by device inst-1"):
        await _attach(db, net_conf, "inst-2", [{"port": user_port["id"]}])

    result = await manager.deallocate_for_instance(CTX, instance_id="inst-1")
    assert result == {"deleted": [made], "unbound": [user_port["id"]]}
    kept = await _port_row(db, user_port["id"])
    assert await _port_row(db, made) is None
    async with db.transaction() as conn:
        ips = await db_networks.fixed_ips_for(conn, [user_port["id"]])
    assert (kept["device_id"], kept["device_owner"], kept["binding_host"], kept["status"]) == ("", "", None, "DOWN")
    assert len(ips[user_port["id"]]) == 1  # the user's port keeps its address

    assert await manager.deallocate_for_instance(CTX, instance_id="inst-1") == {"deleted": [], "unbound": []}
    # and the port can go to another instance now
    assert (await _attach(db, net_conf, "inst-2", [{"port": user_port["id"]}]))[0]["id"] == user_port["id"]


async def test_deallocate_frees_addresses_and_network_can_go(manager: NetworkManager, db: Database, net_conf):
    net, _ = await _net(db, "private", "10.1.0.0/24")
    await _attach(db, net_conf, "inst-1", [{"uuid": net["id"]}])
    with pytest.raises(exceptions.Conflict, match="inst-1"):
        await db.run(lambda conn: db_networks.delete_network(conn, net["id"]))
    await manager.deallocate_for_instance(CTX, instance_id="inst-1")
    assert await db.run(lambda conn: db_networks.delete_network(conn, net["id"])) is True


async def test_no_networks_means_no_ports(db: Database, net_conf):
    assert await _attach(db, net_conf, "inst-1", []) == []
    assert await db.run(lambda conn: db_networks.instance_ports(conn, "inst-1")) == []


async def test_dhcp_is_woken_by_what_it_serves_not_by_a_bind(db: Database, net_conf, net_dsn: str):
    """The DHCP agent's channel hears a port made and a port renamed, not a port bound to a host (each claim
    binds; the agent serves MAC, name and addresses, whatever the host)."""
    net, _ = await _net(db, "private", "10.1.0.0/24")
    heard: list[str] = []
    listener = await asyncpg.connect(net_dsn)
    await listener.add_listener("stratus_network", lambda *args: heard.append(args[3]))

    async def heard_after(change) -> list[str]:
        heard.clear()
        await change
        await listener.execute("SELECT 1")  # a round trip: notifications sent before it have arrived
        return list(heard)

    try:
        assert await heard_after(_attach(db, net_conf, "inst-1", [{"uuid": net["id"]}])) == [net["id"]]
        bind = db.run(lambda conn: db_networks.bind_instance_ports(conn, "inst-1", "host-a"))
        assert await heard_after(bind) == []
        rename = db.run(lambda conn: conn.execute("UPDATE ports SET dns_name = 'renamed' WHERE device_id = 'inst-1'"))
        assert await heard_after(rename) == [net["id"]]
    finally:
        await listener.close()
