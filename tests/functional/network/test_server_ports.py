"""A server's ports around a build the scheduler never gets: the real application on a real PostgreSQL and a
real broker vhost in which nothing consumes topic ``scheduler``, so the broker returns the build cast
(``mandatory``). The server must end in ERROR saying so, with its action closed and its ports given back."""

from __future__ import annotations

import pytest

from common.db import actions
from common.db import flavors as flavors_db
from common.db import images as images_db
from common.db.pool import Database
from common.rpc import Transport
from tests.functional.network.conftest import Api, make_conf, serve_api

pytestmark = pytest.mark.functional


async def test_a_build_no_scheduler_takes_is_error_naming_the_cast_and_gives_back_its_ports(
    net_dsn: str, rabbit_vhost, db: Database
):
    conf = make_conf(net_dsn, transport_url=rabbit_vhost.transport_url)
    flavor = await db.run(lambda conn: flavors_db.create(conn, name="tiny", vcpus=1, ram_mb=64, disk_gb=1))
    image = await db.run(
        lambda conn: images_db.create(conn, {
            "project_id": "p-admin", "name": "img", "status": "active", "visibility": "public", "disk_format": "qcow2",
            "container_format": "bare", "location": "file:///nowhere", "size": 1,
        })
    )  # fmt: skip
    transport = await Transport.connect(conf, service="test-api")
    try:
        async with serve_api(conf, db, transport) as api:
            compute = Api(api.client, api.tokens, prefix="/compute/v2.1")
            status, net = await api.post("/networks", {"network": {"name": "n1"}})
            assert status == 201, net
            net_id = net["network"]["id"]
            body = {"subnet": {"network_id": net_id, "cidr": "10.77.0.0/29", "ip_version": 4}}
            assert (await api.post("/subnets", body))[0] == 201
            server = {
                "name": "lonely",
                "flavorRef": flavor["id"],
                "imageRef": image["id"],
                "networks": [{"uuid": net_id}],
            }
            status, reply = await compute.post("/servers", {"server": server})
            assert status == 202, reply
            sid = reply["server"]["id"]
            status, shown = await compute.get(f"/servers/{sid}")
            assert status == 200 and shown["server"]["status"] == "ERROR", shown
            fault = shown["server"]["fault"]
            assert fault["code"] == 503
            assert fault["message"].startswith("The build request could not be handed to a scheduler: "), fault
            status, ports = await api.get(f"/ports?device_id={sid}")
            assert status == 200 and ports["ports"] == [], "the ports made with the server were not given back"
    finally:
        await transport.close()
    async with db.transaction() as conn:
        [action] = await actions.list_actions(conn, sid)
        events = await actions.list_events(conn, action["id"])
        fault_row = await conn.fetchrow("SELECT details FROM instance_faults WHERE instance_id = $1", sid)
    assert action["message"] == "Error" and action["finish_time"] is not None
    assert [(e["event"], e["result"]) for e in events] == [("api_schedule_instance", "Error")]
    assert "casting build_instances to topic 'scheduler'" in str(fault_row["details"])


async def test_a_boot_may_name_only_networks_its_project_may_attach_to(net_dsn: str, rabbit_vhost, db: Database):
    """Another project's private network is a 400 naming it, and nothing is made; a shared network, or any network
    for an admin, is accepted (the build then fails here for want of a scheduler, which is not the point)."""
    conf = make_conf(net_dsn, transport_url=rabbit_vhost.transport_url)
    flavor = await db.run(lambda conn: flavors_db.create(conn, name="tiny2", vcpus=1, ram_mb=64, disk_gb=1))
    image = await db.run(
        lambda conn: images_db.create(conn, {
            "project_id": "p-admin", "name": "img2", "status": "active", "visibility": "public",
            "disk_format": "qcow2", "container_format": "bare", "location": "file:///nowhere", "size": 1,
        })
    )  # fmt: skip
    transport = await Transport.connect(conf, service="test-api")
    try:
        async with serve_api(conf, db, transport) as api:
            compute = Api(api.client, api.tokens, prefix="/compute/v2.1")
            nets = {}
            for name, body in (("alices", {"name": "alices"}), ("shared", {"name": "shared", "shared": True})):
                who = "alice" if name == "alices" else "admin"
                status, net = await api.post("/networks", {"network": body}, who=who)
                assert status == 201, net
                nets[name] = net["network"]["id"]
                subnet = {"network_id": nets[name], "cidr": f"10.78.{len(nets)}.0/29", "ip_version": 4}
                assert (await api.post("/subnets", {"subnet": subnet}, who=who))[0] == 201

            async def boot(who: str, *names: str) -> tuple[int, dict]:
                server = {"name": f"{who}-vm", "flavorRef": flavor["id"], "imageRef": image["id"],
                          "networks": [{"uuid": nets[n]} for n in names]}  # fmt: skip
                return await compute.post("/servers", {"server": server}, who=who)

            status, reply = await boot("bob", "shared", "alices")
            assert status == 400, reply
            assert reply["badRequest"]["message"] == f"Network {nets['alices']} could not be found.", reply
            status, ports = await api.get("/ports?device_owner=compute:nova", who="admin")
            assert status == 200 and ports["ports"] == [], "a refused boot left a port behind"
            status, servers = await compute.get("/servers", who="bob")
            assert status == 200 and servers["servers"] == [], "a refused boot left a server behind"
            for who, names in (("bob", ("shared",)), ("alice", ("alices", "shared")), ("admin", ("alices",))):
                status, reply = await boot(who, *names)
                assert status == 202, (who, reply)
    finally:
        await transport.close()
