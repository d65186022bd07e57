"""Security groups and rules through the Network API (real PostgreSQL), and the firewall view computes get."""

from __future__ import annotations

import pytest

from services.network.manager import firewall_ports
from tests.functional.network.conftest import PROJECT_A, Api
from tests.functional.network.test_api import _network, _subnet

pytestmark = pytest.mark.functional


async def test_group_and_rule_crud_with_neutrons_answers(api: Api):
    status, body = await api.post("/security-groups", {"security_group": {"name": "web", "description": "w"}})
    assert status == 201, body
    web = body["security_group"]
    assert web["project_id"] == PROJECT_A and web["stateful"] is True
    assert {(r["direction"], r["ethertype"]) for r in web["security_group_rules"]} == {("egress", "IPv4"),
                                                                                      ("egress", "IPv6")}  # fmt: skip
    rule = {"security_group_id": web["id"], "direction": "ingress", "protocol": "tcp", "port_range_min": 80,
            "port_range_max": 81, "remote_ip_prefix": "192.0.2.0/24"}  # fmt: skip
    status, body = await api.post("/security-group-rules", {"security_group_rule": rule})
    assert status == 201, body
    created = body["security_group_rule"]
    assert created["ethertype"] == "IPv4" and created["remote_ip_prefix"] == "192.0.2.0/24"
    assert (await api.post("/security-group-rules", {"security_group_rule": rule}))[0] == 409  # duplicate
    for bad in ({"direction": "sideways"}, {"protocol": "gre", "port_range_min": 1},
                {"protocol": "tcp", "port_range_min": 90, "port_range_max": 80},
                {"remote_ip_prefix": "not-a-cidr"}, {"remote_ip_prefix": "2001:db8::/64"},
                {"protocol": "bogus"}):  # fmt: skip
        status, body = await api.post("/security-group-rules", {"security_group_rule": {**rule, **bad}})
        assert status == 400, (bad, body)
        assert "NeutronError" in body or "message" in str(body)
    assert (await api.post("/security-group-rules", {"security_group_rule": rule}, "bob"))[0] == 404
    status, body = await api.get(f"/security-groups/{web['id']}")
    assert len(body["security_group"]["security_group_rules"]) == 3
    status, body = await api.put(f"/security-groups/{web['id']}", {"security_group": {"name": "web2"}})
    assert status == 200 and body["security_group"]["name"] == "web2"
    assert (await api.post("/security-groups", {"security_group": {"name": "default"}}))[0] == 409
    status, body = await api.get("/security-group-rules", params={"security_group_id": web["id"]})
    assert len(body["security_group_rules"]) == 3
    assert (await api.delete(f"/security-group-rules/{created['id']}"))[0] == 204
    assert (await api.get(f"/security-group-rules/{created['id']}"))[0] == 404

    # A port in the group: the group cannot go until the port leaves it.
    net = await _network(api, "sgnet")
    await _subnet(api, net["id"], "10.31.0.0/24")
    status, body = await api.post("/ports", {"port": {"network_id": net["id"], "security_groups": [web["id"]]}})
    assert status == 201 and body["port"]["security_groups"] == [web["id"]], body
    port = body["port"]
    status, body = await api.get("/ports", params={"security_groups": web["id"]})
    assert [p["id"] for p in body["ports"]] == [port["id"]]
    status, body = await api.delete(f"/security-groups/{web['id']}")
    assert status == 409 and port["id"] in str(body), body
    status, body = await api.put(f"/ports/{port['id']}", {"port": {"security_groups": ["default"]}})
    assert status == 200 and body["port"]["security_groups"] != [web["id"]], body
    assert (await api.post("/ports", {"port": {"network_id": net["id"], "security_groups": ["nope"]}}))[0] == 404
    assert (await api.delete(f"/security-groups/{web['id']}"))[0] == 204
    [default] = (await api.get("/security-groups"))[1]["security_groups"]
    assert (await api.delete(f"/security-groups/{default['id']}"))[0] == 409


async def test_firewall_view_carries_rules_and_group_members(api: Api, db):
    net = await _network(api, "fwnet")
    await _subnet(api, net["id"], "10.32.0.0/24")
    web = (await api.post("/security-groups", {"security_group": {"name": "web"}}))[1]["security_group"]
    rule = {"security_group_id": web["id"], "direction": "ingress", "protocol": "tcp", "port_range_min": 22,
            "remote_group_id": web["id"]}  # fmt: skip
    assert (await api.post("/security-group-rules", {"security_group_rule": rule}))[0] == 201
    ports = []
    for sgs in ([web["id"]], [web["id"]], None):
        body = {"network_id": net["id"], "device_id": "vm", "device_owner": "compute:nova", "project_id": PROJECT_A}
        if sgs:
            body["security_groups"] = sgs
        status, created = await api.post("/ports", {"port": body}, who="admin")
        assert status == 201, created
        ports.append(created["port"])
    async with db.transaction() as conn:
        await conn.execute("UPDATE ports SET binding_host = 'h1'")
        view = {p["id"]: p for p in await firewall_ports(conn, "h1")}
    a, b, c = (view[p["id"]] for p in ports)
    assert [g["id"] for g in a["security_groups"]] == [web["id"]]
    ssh = [r for r in a["security_groups"][0]["rules"] if r["protocol"] == "tcp"]
    assert ssh == [{"direction": "ingress", "ethertype": "IPv4", "protocol": "tcp", "port_range_min": 22,
                    "port_range_max": 22, "remote_group_id": web["id"], "remote_ip_prefix": None}]  # fmt: skip
    members = a["remote_group_ips"][web["id"]]
    assert sorted(members) == sorted(p["fixed_ips"][0]["ip_address"] for p in ports[:2])
    assert c["security_groups"][0]["id"] != web["id"]  # the default group
    assert c["tap"] == f"tap{c['id'][:11]}" and c["bridge"].startswith("brq") and c["mac_address"]
