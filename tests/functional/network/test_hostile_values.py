"""Hostile values at both ends (real PostgreSQL, the real API application, the real ``nft``): the API refuses them
with a 400 in Neutron's shape naming the field and stores nothing, and a bad value that reaches the database by
another way costs only its own port on the compute's firewall."""

from __future__ import annotations

import asyncio
import json
import secrets
import subprocess

import pytest

from services.compute import firewall
from services.network.manager import firewall_ports
from tests.functional.network.conftest import PROJECT_A, Api
from tests.functional.network.test_api import _network, _subnet

pytestmark = pytest.mark.functional


async def _nft(*args: str) -> subprocess.CompletedProcess:
    return await asyncio.to_thread(subprocess.run, ["nft", *args], capture_output=True, text=True)


def _refused(status: int, body: dict, field: str) -> None:
    assert status == 400, body
    error = body["NeutronError"]
    assert field in error["message"] and error["message"].isascii(), error


async def test_a_unicode_digit_protocol_is_a_400_and_stores_nothing(api: Api, db):
    group = (await api.post("/security-groups", {"security_group": {"name": "g"}}))[1]["security_group"]
    base = {"security_group_id": group["id"], "direction": "ingress"}
    for protocol in ["６", "٦", "6\n", " tcp", "ｔｃｐ", "300", True]:
        status, body = await api.post("/security-group-rules", {"security_group_rule": {**base, "protocol": protocol}})
        _refused(status, body, "protocol")
    for bad, field in [
        ({"protocol": "tcp", "port_range_min": 22, "port_range_max": 21}, "port_range_min"),
        ({"protocol": "icmp", "port_range_min": 8, "port_range_max": 300}, "port_range_max"),
        ({"protocol": "icmp", "port_range_max": 0}, "port_range_max"),
        ({"protocol": "tcp", "remote_ip_prefix": "10.0.0.0/8\n"}, "remote_ip_prefix"),
        ({"ethertype": "IPv6", "remote_ip_prefix": "fe80::1%eth0/64"}, "remote_ip_prefix"),
        ({"protocol": "ipv6-icmp"}, "protocol"),
    ]:
        _refused(*await api.post("/security-group-rules", {"security_group_rule": {**base, **bad}}), field)
    status, body = await api.post("/security-group-rules", {"security_group_rule": {**base, "protocol": "006"}})
    assert status == 201 and body["security_group_rule"]["protocol"] == "6", body
    async with db.transaction() as conn:
        stored = [r["protocol"] for r in await conn.fetch(
            "SELECT protocol FROM security_group_rules WHERE security_group_id = $1", group["id"])]  # fmt: skip
    assert sorted(stored, key=str) == sorted([None, None, "6"], key=str)  # the two default egress rules, and "6"


async def test_a_bad_rule_in_the_database_costs_only_its_own_port(api: Api, db):
    """A rule with protocol "６" written straight into the database (as before the API checked it) reaches the
    compute's firewall view: the real nft tables then hold every other port's rules, and a drop-everything chain
    for the ports of that group."""
    net = await _network(api, "hostile-fw")
    await _subnet(api, net["id"], "10.33.0.0/24")
    bad_group = (await api.post("/security-groups", {"security_group": {"name": "bad"}}))[1]["security_group"]
    ports = []
    for groups in ([bad_group["id"]], None, None):
        body = {"network_id": net["id"], "device_id": "vm", "device_owner": "compute:nova", "project_id": PROJECT_A}
        body |= {"security_groups": groups} if groups else {}
        status, created = await api.post("/ports", {"port": body}, who="admin")
        assert status == 201, created
        ports.append(created["port"])
    async with db.transaction() as conn:
        await conn.execute(
            "INSERT INTO security_group_rules (id, security_group_id, project_id, direction, ethertype, protocol) "
            "VALUES ($1, $2, $3, 'ingress', 'IPv4', '６')",
            f"r-{secrets.token_hex(4)}", bad_group["id"], PROJECT_A,
        )  # fmt: skip
        await conn.execute("UPDATE ports SET binding_host = 'hostile-h1'")
        view = await firewall_ports(conn, "hostile-h1")
    table = f"stratus_ft_{secrets.token_hex(4)}"
    try:
        refused = await firewall.NftFirewall(table).apply(view)
        assert list(refused) == [ports[0]["id"]] and "'\\uff16'" in refused[ports[0]["id"]]
        listed = json.loads((await _nft("-j", "list", "ruleset")).stdout)["nftables"]
        chains = {i["rule"]["chain"] for i in listed if "rule" in i and i["rule"]["table"] == table}
        for good in ports[1:]:
            hexid = good["id"].replace("-", "")[:16]
            assert {f"out_{hexid}", f"in_{hexid}", f"eg_{hexid}"} <= chains, chains
        bad_hex = ports[0]["id"].replace("-", "")[:16]
        assert f"out_{bad_hex}" in chains and f"in_{bad_hex}" not in chains
    finally:
        for family in ("bridge", "inet"):
            await _nft("delete", "table", family, table)


async def test_dns_values_with_a_newline_are_a_400(api: Api, db):
    for domain in ["evil.example\ndhcp-range=10.0.0.0,10.0.0.9", "exa mple.org", "ｅxample.org", "a..b", "-a.org"]:
        _refused(*await api.post("/networks", {"network": {"name": "dns", "dns_domain": domain}}), "dns_domain")
    net = await _network(api, "dns-ok", dns_domain="tenant.example.")
    assert net["dns_domain"] == "tenant.example."
    status, body = await api.put(f"/networks/{net['id']}", {"network": {"dns_domain": "x\nserver=1.2.3.4"}})
    _refused(status, body, "dns_domain")
    async with db.transaction() as conn:
        assert await conn.fetchval("SELECT dns_domain FROM networks WHERE id = $1", net["id"]) == "tenant.example."
        assert await conn.fetchval("SELECT count(*) FROM networks WHERE name = 'dns'") == 0
    await _subnet(api, net["id"], "10.34.0.0/24")
    for name in ["web\n", "web.example", "wéb", "web_1", "-web"]:
        _refused(*await api.post("/ports", {"port": {"network_id": net["id"], "dns_name": name}}), "dns_name")
    status, body = await api.post("/ports", {"port": {"network_id": net["id"], "dns_name": "Web-1"}})
    assert status == 201, body
    _refused(*await api.put(f"/ports/{body['port']['id']}", {"port": {"dns_name": "a\nb"}}), "dns_name")
    for attrs, field in [({"dns_nameservers": ["192.0.2.1\n"]}, "dns_nameservers"),
                         ({"dns_nameservers": ["１92.0.2.1"]}, "dns_nameservers"),
                         ({"host_routes": [{"destination": "0.0.0.0/0", "nexthop": "10.35.0.9,evil"}]}, "host_routes"),
                         ({"gateway_ip": "10.35.0.1\n"}, "gateway_ip")]:  # fmt: skip
        status, body = await api.post(
            "/subnets", {"subnet": {"network_id": net["id"], "cidr": "10.35.0.0/24", "ip_version": 4, **attrs}}
        )
        _refused(status, body, field)
