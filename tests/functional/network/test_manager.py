"""NetworkManager against a real PostgreSQL: the allocate/deallocate contract of docs/internals.md."""

from __future__ import annotations

import asyncio

import pytest

from common import exceptions
from common.context import RequestContext
from common.db import networks as db_networks
from common.db.pool import Database
from services.network.manager import NetworkManager

pytestmark = pytest.mark.functional

CTX = RequestContext(project_id="proj", roles=("member",))
PORT_KEYS = {"id", "network_id", "mac_address", "fixed_ips", "bridge", "mtu", "cidr", "gateway_ip", "dns_name",
             "dns_domain"}  # fmt: skip


@pytest.fixture
def manager(net_conf, db: Database) -> NetworkManager:
    return NetworkManager(net_conf, db)


async def _net(db: Database, name: str, cidr: str, project: str = "proj", shared: bool = False):
    return await db.run(lambda conn: db_networks.create_network_with_subnet(conn, project, name, cidr, shared))


async def _alloc(manager: NetworkManager, instance_id: str, networks, ctx: RequestContext = CTX, project="proj"):
    return await manager.allocate_for_instance(
        ctx, instance_id=instance_id, project_id=project, hostname="vm1", host="host-a", networks=networks
    )


async def test_allocate_returns_the_contract_port_dicts(manager: NetworkManager, db: Database):
    net, subnet = await _net(db, "private", "10.1.0.0/24")
    ports = await _alloc(manager, "inst-1", [{"uuid": net["id"]}])
    assert len(ports) == 1
    port = ports[0]
    assert set(port) == PORT_KEYS
    assert port["network_id"] == net["id"]
    assert port["mac_address"].startswith("fa:16:3e:")
    assert port["fixed_ips"] == [{"subnet_id": subnet["id"], "ip_address": "10.1.0.2"}]
    assert port["bridge"] == "brq" + net["id"][:11]
    assert (port["mtu"], port["cidr"], port["gateway_ip"]) == (1500, "10.1.0.0/24", "10.1.0.1")
    async with db.transaction() as conn:
        row = await db_networks.get_port(conn, port["id"])
    assert (row["device_id"], row["device_owner"], row["binding_host"], row["status"], row["dns_name"]) == (
        "inst-1",
        "compute:nova",
        "host-a",
        "ACTIVE",
        "vm1",
    )


async def test_allocate_is_idempotent(manager: NetworkManager, db: Database):
    net, _ = await _net(db, "private", "10.1.0.0/24")
    other, _ = await _net(db, "other", "10.2.0.0/24")
    first = await _alloc(manager, "inst-1", [{"uuid": net["id"]}, {"uuid": other["id"]}])
    again = await _alloc(manager, "inst-1", [{"uuid": net["id"]}, {"uuid": other["id"]}])
    assert again == first
    # concurrent duplicates (a redelivered call racing the original) also make one set of ports
    racing = await asyncio.gather(*(_alloc(manager, "inst-2", [{"uuid": net["id"]}]) for _ in range(5)))
    assert all(r == racing[0] for r in racing)
    async with db.transaction() as conn:
        assert await conn.fetchval("SELECT count(*) FROM ports WHERE device_id = 'inst-2'") == 1


async def test_fixed_ip_request(manager: NetworkManager, db: Database):
    net, _ = await _net(db, "private", "10.1.0.0/24")
    ports = await _alloc(manager, "inst-1", [{"uuid": net["id"], "fixed_ip": "10.1.0.33"}])
    assert ports[0]["fixed_ips"][0]["ip_address"] == "10.1.0.33"


async def test_allocation_is_all_or_nothing(manager: NetworkManager, db: Database):
    net, _ = await _net(db, "private", "10.1.0.0/24")
    tiny, _ = await _net(db, "tiny", "10.3.0.0/30")  # one address
    await _alloc(manager, "inst-1", [{"uuid": tiny["id"]}])
    with pytest.raises(exceptions.IpAddressExhausted, match="10.3.0.0/30"):
        await _alloc(manager, "inst-2", [{"uuid": net["id"]}, {"uuid": tiny["id"]}])
    async with db.transaction() as conn:
        assert await db_networks.ports_for_device(conn, "inst-2") == []


async def test_visibility(manager: NetworkManager, db: Database):
    theirs, _ = await _net(db, "theirs", "10.4.0.0/24", project="someone-else")
    shared, _ = await _net(db, "public", "10.5.0.0/24", project="someone-else", shared=True)
    with pytest.raises(exceptions.NotFound, match=theirs["id"]):
        await _alloc(manager, "inst-1", [{"uuid": theirs["id"]}])
    assert (await _alloc(manager, "inst-1", [{"uuid": shared["id"]}]))[0]["network_id"] == shared["id"]
    admin = RequestContext(project_id="admin-project", roles=("admin",))
    assert (await _alloc(manager, "inst-2", [{"uuid": theirs["id"]}], ctx=admin))[0]["network_id"] == theirs["id"]
    with pytest.raises(exceptions.BadRequest, match="needs 'uuid'"):
        await _alloc(manager, "inst-3", [{"net": "x"}])


async def test_user_port_is_bound_then_unbound_not_deleted(manager: NetworkManager, db: Database, net_conf):
    net, _ = await _net(db, "private", "10.1.0.0/24")
    user_port = await db.run(
        lambda conn: db_networks.create_port(
            conn, network_id=net["id"], project_id="proj", base_mac=net_conf.network.base_mac, name="mine"
        )
    )
    ports = await _alloc(manager, "inst-1", [{"port": user_port["id"], "uuid": net["id"]}, {"uuid": net["id"]}])
    assert ports[0]["id"] == user_port["id"]
    made = ports[1]["id"]
    # bound ports cannot be given to a second instance
    with pytest.raises(exceptions.Conflict, match="in use by device inst-1"):
        await _alloc(manager, "inst-2", [{"port": user_port["id"]}])

    result = await manager.deallocate_for_instance(CTX, instance_id="inst-1")
    assert result == {"deleted": [made], "unbound": [user_port["id"]]}
    async with db.transaction() as conn:
        kept = await db_networks.get_port(conn, user_port["id"])
        assert await db_networks.get_port(conn, made) is None
        ips = await db_networks.fixed_ips_for(conn, [user_port["id"]])
    assert (kept["device_id"], kept["device_owner"], kept["binding_host"], kept["status"]) == ("", "", None, "DOWN")
    assert len(ips[user_port["id"]]) == 1  # the user's port keeps its address

    assert await manager.deallocate_for_instance(CTX, instance_id="inst-1") == {"deleted": [], "unbound": []}
    # and the port can go to another instance now
    assert (await _alloc(manager, "inst-2", [{"port": user_port["id"]}]))[0]["id"] == user_port["id"]


async def test_other_projects_port_is_not_found(manager: NetworkManager, db: Database, net_conf):
    net, _ = await _net(db, "public", "10.5.0.0/24", shared=True)
    port = await db.run(
        lambda conn: db_networks.create_port(
            conn, network_id=net["id"], project_id="someone-else", base_mac=net_conf.network.base_mac
        )
    )
    with pytest.raises(exceptions.NotFound, match=port["id"]):
        await _alloc(manager, "inst-1", [{"port": port["id"]}])


async def test_deallocate_frees_addresses_and_network_can_go(manager: NetworkManager, db: Database):
    net, _ = await _net(db, "private", "10.1.0.0/24")
    await _alloc(manager, "inst-1", [{"uuid": net["id"]}])
    with pytest.raises(exceptions.Conflict, match="inst-1"):
        await db.run(lambda conn: db_networks.delete_network(conn, net["id"]))
    await manager.deallocate_for_instance(CTX, instance_id="inst-1")
    assert await db.run(lambda conn: db_networks.delete_network(conn, net["id"])) is True


async def test_no_networks_means_no_ports(manager: NetworkManager):
    assert await _alloc(manager, "inst-1", []) == []


async def test_repeated_allocation_keeps_the_request_order(manager: NetworkManager, db: Database, net_conf):
    """NIC order matters to the guest: a retried call must not reorder ports (same transaction, user's port)."""
    a, _ = await _net(db, "a", "10.6.0.0/24")
    b, _ = await _net(db, "b", "10.7.0.0/24")
    user_port = await db.run(
        lambda conn: db_networks.create_port(
            conn, network_id=a["id"], project_id="proj", base_mac=net_conf.network.base_mac
        )
    )
    request = [{"uuid": b["id"]}, {"uuid": a["id"]}, {"port": user_port["id"]}, {"uuid": b["id"]}]
    first = await _alloc(manager, "inst-1", request)
    assert [p["network_id"] for p in first] == [b["id"], a["id"], a["id"], b["id"]]
    assert first[2]["id"] == user_port["id"]
    for _ in range(5):
        assert await _alloc(manager, "inst-1", request) == first
