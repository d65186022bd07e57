"""The Network API through the real application (middleware, auth, routes) on a real PostgreSQL."""

from __future__ import annotations

import asyncio

import pytest

from tests.functional.network.conftest import PROJECT_A, Api

pytestmark = pytest.mark.functional


async def _network(api: Api, name: str = "net1", who: str = "alice", **attrs) -> dict:
    status, body = await api.post("/networks", {"network": {"name": name, **attrs}}, who)
    assert status == 201, body
    return body["network"]


async def _subnet(api: Api, network_id: str, cidr: str, who: str = "alice", **attrs) -> dict:
    status, body = await api.post(
        "/subnets", {"subnet": {"network_id": network_id, "cidr": cidr, "ip_version": 4, **attrs}}, who
    )
    assert status == 201, body
    return body["subnet"]


async def test_version_documents_need_no_token(api: Api):
    resp = await api.client.get("/network/")
    body = await resp.json()
    assert resp.status == 200
    assert body["versions"][0]["id"] == "v2.0" and body["versions"][0]["status"] == "CURRENT"
    status, body = await api.get("", who="")
    assert status == 200
    assert {r["collection"] for r in body["resources"]} >= {"networks", "subnets", "ports"}
    status, body = await api.get("/networks", who="")
    assert status == 401


async def test_network_crud_and_shape(api: Api):
    net = await _network(api, "blue", description="d")
    expected = {
        "id", "name", "tenant_id", "project_id", "admin_state_up", "status", "subnets", "shared", "mtu",
        "router:external", "created_at", "updated_at", "revision_number", "tags", "port_security_enabled",
    }  # fmt: skip
    assert expected <= set(net), expected - set(net)
    assert (net["tenant_id"], net["project_id"], net["status"], net["mtu"]) == (PROJECT_A, PROJECT_A, "ACTIVE", 1500)
    assert net["created_at"].endswith("Z") and net["subnets"] == [] and net["revision_number"] == 0

    status, body = await api.put(f"/networks/{net['id']}", {"network": {"name": "green", "admin_state_up": False}})
    assert status == 200, body
    assert body["network"]["name"] == "green" and body["network"]["admin_state_up"] is False
    assert body["network"]["revision_number"] == 1

    status, body = await api.get(f"/networks/{net['id']}")
    assert status == 200 and body["network"]["name"] == "green"
    status, body = await api.get("/networks", params={"name": "green"})
    assert [n["id"] for n in body["networks"]] == [net["id"]]
    status, body = await api.get("/networks", params={"name": "nope"})
    assert body["networks"] == []

    status, _ = await api.delete(f"/networks/{net['id']}")
    assert status == 204
    status, body = await api.get(f"/networks/{net['id']}")
    assert status == 404 and "NeutronError" in body and net["id"] in body["NeutronError"]["message"]


async def test_network_visibility_and_policy(api: Api):
    mine = await _network(api, "alices")
    shared = await _network(api, "public", who="admin", shared=True)
    bobs = await _network(api, "bobs", who="bob")

    status, body = await api.get("/networks")
    assert {n["id"] for n in body["networks"]} == {mine["id"], shared["id"]}
    status, body = await api.get("/networks", who="admin")
    assert {n["id"] for n in body["networks"]} >= {mine["id"], shared["id"], bobs["id"]}
    status, body = await api.get("/networks", params={"shared": "true"})
    assert [n["id"] for n in body["networks"]] == [shared["id"]]

    assert (await api.get(f"/networks/{bobs['id']}"))[0] == 404
    assert (await api.delete(f"/networks/{bobs['id']}"))[0] == 404
    assert (await api.put(f"/networks/{shared['id']}", {"network": {"name": "x"}}))[0] == 403
    assert (await api.post("/networks", {"network": {"name": "s", "shared": True}}))[0] == 403
    assert (await api.post("/networks", {"network": {"name": "s", "project_id": "p-bob"}}))[0] == 403


async def test_unknown_and_read_only_attributes_get_neutrons_messages(api: Api):
    status, body = await api.post("/networks", {"network": {"name": "x", "frobnicate": 1}})
    assert status == 400 and "Unrecognized attribute(s) 'frobnicate'" in body["NeutronError"]["message"]
    net = await _network(api)
    status, body = await api.put(f"/networks/{net['id']}", {"network": {"id": "other"}})
    assert status == 400 and "read-only attribute id" in body["NeutronError"]["message"]
    status, body = await api.post("/networks", {"network": {"mtu": 5}})
    assert status == 400 and "mtu" in body["NeutronError"]["message"]
    status, body = await api.get("/networks", params={"color": "red"})
    assert status == 400 and "color" in body["NeutronError"]["message"]


async def test_subnet_create_defaults_and_validation(api: Api):
    net = await _network(api)
    sub = await _subnet(api, net["id"], "10.10.0.0/24", name="s1", dns_nameservers=["8.8.8.8"])
    assert sub["gateway_ip"] == "10.10.0.1"
    assert sub["allocation_pools"] == [{"start": "10.10.0.2", "end": "10.10.0.254"}]
    assert sub["dns_nameservers"] == ["8.8.8.8"] and sub["enable_dhcp"] is True and sub["ip_version"] == 4
    assert sub["tenant_id"] == PROJECT_A
    status, body = await api.get(f"/networks/{net['id']}")
    assert body["network"]["subnets"] == [sub["id"]]

    for bad, fragment in [
        ({"cidr": "10.11.0.1/24"}, "recommended CIDR"),
        ({"cidr": "10.11.0.0/24", "gateway_ip": "10.12.0.1"}, "not in subnet"),
        ({"cidr": "10.11.0.0/24", "allocation_pools": [{"start": "10.11.0.10", "end": "10.11.1.20"}]}, "spans"),
        (
            {
                "cidr": "10.11.0.0/24",
                "allocation_pools": [
                    {"start": "10.11.0.10", "end": "10.11.0.20"},
                    {"start": "10.11.0.15", "end": "10.11.0.30"},
                ],
            },
            "overlapping",
        ),
        ({"cidr": "10.10.0.128/25"}, "overlaps with subnet"),
        ({"cidr": "fd00::/64", "ip_version": 6}, "ip_version"),
    ]:
        status, body = await api.post("/subnets", {"subnet": {"network_id": net["id"], "ip_version": 4, **bad}})
        assert status == 400, (bad, body)
        assert fragment in body["NeutronError"]["message"], (bad, body)

    status, body = await api.put(f"/subnets/{sub['id']}", {"subnet": {"name": "renamed", "gateway_ip": None}})
    assert status == 200, body
    assert body["subnet"]["name"] == "renamed" and body["subnet"]["gateway_ip"] is None
    status, body = await api.get("/subnets", params={"network_id": net["id"]})
    assert [s["id"] for s in body["subnets"]] == [sub["id"]]
    status, body = await api.get("/subnets", params={"cidr": "10.10.0.0/24"})
    assert [s["id"] for s in body["subnets"]] == [sub["id"]]
    # Bob sees neither the network nor its subnet; he cannot add subnets to it either
    assert (await api.get(f"/subnets/{sub['id']}", who="bob"))[0] == 404
    assert (await api.post("/subnets", {"subnet": {"network_id": net["id"], "cidr": "10.99.0.0/24"}}, "bob"))[0] == 404
    status, _ = await api.delete(f"/subnets/{sub['id']}")
    assert status == 204


async def test_ports(api: Api):
    net = await _network(api)
    sub = await _subnet(api, net["id"], "10.20.0.0/24")
    status, body = await api.post("/ports", {"port": {"network_id": net["id"], "name": "p1"}})
    assert status == 201, body
    p1 = body["port"]
    assert p1["fixed_ips"] == [{"subnet_id": sub["id"], "ip_address": "10.20.0.2"}]
    assert p1["mac_address"].startswith("fa:16:3e:") and p1["status"] == "DOWN"
    assert p1["tenant_id"] == PROJECT_A and len(p1["security_groups"]) == 1
    assert "binding:host_id" not in p1  # admin-only, as in Neutron

    status, body = await api.post(
        "/ports",
        {"port": {"network_id": net["id"], "fixed_ips": [{"subnet_id": sub["id"], "ip_address": "10.20.0.50"}]}},
    )
    assert status == 201, body
    p2 = body["port"]
    status, body = await api.post(
        "/ports", {"port": {"network_id": net["id"], "fixed_ips": [{"ip_address": "10.20.0.50"}]}}
    )
    assert status == 409 and "10.20.0.50" in body["NeutronError"]["message"]

    status, body = await api.get("/ports", params={"fixed_ips": "ip_address=10.20.0.50"})
    assert [p["id"] for p in body["ports"]] == [p2["id"]]
    status, body = await api.get("/ports", params={"mac_address": p1["mac_address"].upper()})
    assert [p["id"] for p in body["ports"]] == [p1["id"]]
    status, body = await api.get("/ports", params={"network_id": net["id"], "fields": ["id", "name"]})
    assert sorted(body["ports"], key=lambda p: p["name"]) == [
        {"id": p2["id"], "name": ""},
        {"id": p1["id"], "name": "p1"},
    ]

    status, body = await api.put(
        f"/ports/{p1['id']}", {"port": {"name": "renamed", "device_id": "dev-1", "device_owner": "x"}}
    )
    assert status == 200 and body["port"]["name"] == "renamed" and body["port"]["device_id"] == "dev-1"
    status, body = await api.get("/ports", params={"device_id": "dev-1"})
    assert [p["id"] for p in body["ports"]] == [p1["id"]]

    status, body = await api.get(f"/ports/{p1['id']}", who="admin")
    assert body["port"]["binding:host_id"] == "" and body["port"]["binding:vif_type"] == "unbound"
    assert (await api.get(f"/ports/{p1['id']}", who="bob"))[0] == 404
    assert (await api.post("/ports", {"port": {"network_id": net["id"]}}, "bob"))[0] == 404
    assert (await api.post("/ports", {"port": {"network_id": net["id"], "binding:host_id": "h"}}))[0] == 403

    status, _ = await api.delete(f"/ports/{p2['id']}")
    assert status == 204
    assert (await api.get(f"/ports/{p2['id']}"))[0] == 404


async def test_exhausted_subnet_is_a_409_naming_it(api: Api):
    net = await _network(api)
    sub = await _subnet(api, net["id"], "10.30.0.0/29")
    created = await asyncio.gather(*(api.post("/ports", {"port": {"network_id": net["id"]}}) for _ in range(5)))
    assert [s for s, _ in created] == [201] * 5
    assert len({b["port"]["fixed_ips"][0]["ip_address"] for _, b in created}) == 5
    status, body = await api.post("/ports", {"port": {"network_id": net["id"]}})
    assert status == 409
    error = body["NeutronError"]
    assert error["type"] == "IpAddressExhausted"
    assert sub["id"] in error["message"] and "10.30.0.0/29" in error["message"]


async def test_delete_network_with_ports_is_a_409(api: Api):
    net = await _network(api)
    await _subnet(api, net["id"], "10.40.0.0/24")
    for dev in ("vm-a", "vm-b"):
        status, _ = await api.post(
            "/ports", {"port": {"network_id": net["id"], "device_id": dev, "device_owner": "appliance:vpn"}}
        )
        assert status == 201
    status, body = await api.delete(f"/networks/{net['id']}")
    assert status == 409
    message = body["NeutronError"]["message"]
    assert "There are 2 ports in use" in message and "vm-a" in message and "vm-b" in message
    status, body = await api.get("/ports", params={"network_id": net["id"]})
    for port in body["ports"]:
        assert (await api.delete(f"/ports/{port['id']}"))[0] == 204
    assert (await api.delete(f"/networks/{net['id']}"))[0] == 204


async def test_pagination(api: Api):
    ids = [(await _network(api, f"n{i}"))["id"] for i in range(5)]
    status, body = await api.get("/networks", params={"limit": "2"})
    assert [n["id"] for n in body["networks"]] == ids[:2]
    next_link = body["networks_links"][0]
    assert next_link["rel"] == "next" and f"marker={ids[1]}" in next_link["href"]
    status, body = await api.get("/networks", params={"limit": "2", "marker": ids[1]})
    assert [n["id"] for n in body["networks"]] == ids[2:4]
    status, body = await api.get("/networks", params={"limit": "2", "marker": ids[3]})
    assert [n["id"] for n in body["networks"]] == ids[4:] and "networks_links" not in body


async def test_security_groups_and_extensions(api: Api):
    status, body = await api.get("/security-groups")
    assert status == 200
    [group] = body["security_groups"]
    assert group["name"] == "default" and group["project_id"] == PROJECT_A
    assert len(group["security_group_rules"]) == 4
    status, body = await api.get(f"/security-groups/{group['id']}")
    assert status == 200 and body["security_group"]["id"] == group["id"]
    assert (await api.get(f"/security-groups/{group['id']}", who="bob"))[0] == 404
    status, body = await api.get("/security-groups", params={"name": "default"})
    assert [g["id"] for g in body["security_groups"]] == [group["id"]]
    status, body = await api.get("/security-group-rules", params={"security_group_id": group["id"]})
    assert len(body["security_group_rules"]) == 4

    status, body = await api.get("/extensions")
    assert status == 200 and "net-mtu" in {e["alias"] for e in body["extensions"]}
    assert (await api.get("/extensions/net-mtu"))[0] == 200
    assert (await api.get("/extensions/tag-ports-during-bulk-creation"))[0] == 404
    status, body = await api.get(f"/quotas/{PROJECT_A}")
    assert status == 200 and body["quota"]["network"] == -1
