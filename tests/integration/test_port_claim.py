"""A port-claim attempt with real guests: the attacker's guest keeps reading the metadata service while its
port is pointed at the victim's server — refused by the API, then forced into the database past it. The
attacker's guest never receives the victim's id, user data or keys; the victim's server never lists the
attacker's address."""

from __future__ import annotations

import base64
import re
import secrets
import time

import pytest

from tests.fixtures.api import Client, password_token
from tests.fixtures.cloud import ADMIN_PASSWORD, wait_status

pytestmark = pytest.mark.integration

SECRET = f"victimsecret{secrets.token_hex(4)}"
PROBE_SCRIPT = """#!/bin/sh
( i=0
while [ $i -lt 90 ]; do
  md=$(timeout 3 wget -q -O - http://169.254.169.254/openstack/latest/meta_data.json | tr -d '\\n')
  uuid=$(echo "$md" | sed -n 's/.*"uuid": *"\\([^"]*\\)".*/\\1/p')
  ud=$(timeout 3 wget -q -O - http://169.254.169.254/openstack/latest/user_data | tr -dc 'a-zA-Z0-9' | head -c 40)
  echo "PROBE round=$i uuid=${uuid:-none} ud=${ud:-none}"
  i=$((i+1)); sleep 1
done; echo "PROBE done" ) &
"""


def _console(conn, server_id: str) -> str:
    return conn.compute.get_server_console_output(server_id)["output"]


def _rounds(console: str) -> list[tuple[int, str, str]]:
    return [(int(n), u, d) for n, u, d in re.findall(r"^PROBE round=(\d+) uuid=(\S+) ud=(\S+)", console, re.M)]


def _wait_rounds(conn, server_id: str, after: int, count: int, timeout: float = 120) -> list[tuple[int, str, str]]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        rounds = [r for r in _rounds(_console(conn, server_id)) if r[0] > after]
        if len(rounds) >= count:
            return rounds
        time.sleep(1)
    raise AssertionError(f"fewer than {count} probe rounds after round {after}:\n{_console(conn, server_id)[-3000:]}")


def test_a_port_pointed_at_another_tenants_server_gets_nothing_of_it(qemu_cloud):
    c = qemu_cloud
    admin = Client(c.endpoint, password_token(c.endpoint, "admin", ADMIN_PASSWORD, "admin"))
    member = admin.ok("GET", "/identity/v3/roles?name=member")["roles"][0]["id"]
    for who in ("victim", "mallory"):
        pid = admin.ok("POST", "/identity/v3/projects", {"project": {"name": f"p-{who}"}})["project"]["id"]
        uid = admin.ok("POST", "/identity/v3/users", {"user": {"name": who, "password": f"{who}-pw",
                                                               "default_project_id": pid}})["user"]["id"]  # fmt: skip
        admin.ok("PUT", f"/identity/v3/projects/{pid}/users/{uid}/roles/{member}")
    victim_sdk, mallory_sdk = c.sdk("p-victim", "victim", "victim-pw"), c.sdk("p-mallory", "mallory", "mallory-pw")
    mallory = Client(c.endpoint, password_token(c.endpoint, "mallory", "mallory-pw", "p-mallory"))
    flavor = admin.ok("GET", "/compute/v2.1/flavors?name=m1.tiny")["flavors"][0]["id"]
    image = admin.ok("GET", "/image/v2/images?name=tiny")["images"][0]["id"]
    net = admin.ok("GET", "/network/v2.0/networks?name=private")["networks"][0]["id"]
    c.bridges = [f"brq{net[:11]}"]
    boot = {"flavorRef": flavor, "imageRef": image}
    victim = victim_sdk.compute.post("/servers", json={"server": {
        **boot, "name": "victim-vm", "networks": [{"uuid": net}], "metadata": {"secret": SECRET},
        "user_data": base64.b64encode(f"#!/bin/sh\necho {SECRET}\n".encode()).decode()}}).json()["server"]  # fmt: skip
    port = mallory.ok("POST", "/network/v2.0/ports", {"port": {"network_id": net, "name": "mallory-port"}})["port"]
    attacker = mallory.ok("POST", "/compute/v2.1/servers", {"server": {
        **boot, "name": "mallory-vm", "networks": [{"port": port["id"]}],
        "user_data": base64.b64encode(PROBE_SCRIPT.encode()).decode()}})["server"]  # fmt: skip
    for sdk, sid in ((victim_sdk, victim["id"]), (mallory_sdk, attacker["id"])):
        assert wait_status(sdk, sid, {"ACTIVE", "ERROR"}, timeout=120).status == "ACTIVE"
    first = _wait_rounds(mallory_sdk, attacker["id"], after=-1, count=2)
    assert all(u == attacker["id"] for _, u, _ in first), first  # the probe works: its own metadata

    # Through the API: refused.
    status, doc = mallory.call("PUT", f"/network/v2.0/ports/{port['id']}", {"port": {"device_id": victim["id"]}})
    assert status in (403, 409), (status, doc)
    # Past the API (as a bug elsewhere might): the row now names the victim's server.
    c.query("UPDATE ports SET device_id = $1 WHERE id = $2 RETURNING id", victim["id"], port["id"])
    try:
        last = max(n for n, _, _ in _rounds(_console(mallory_sdk, attacker["id"])))
        after = _wait_rounds(mallory_sdk, attacker["id"], after=last, count=4)
        print("attacker's probes after the forced claim:", after)
        assert all(u != victim["id"] and SECRET not in d for _, u, d in after), after
        assert SECRET not in _console(mallory_sdk, attacker["id"])
        shown = victim_sdk.compute.get(f"/servers/{victim['id']}").json()["server"]
        addresses = [a["addr"] for n in shown["addresses"].values() for a in n]
        assert port["fixed_ips"][0]["ip_address"] not in addresses and len(addresses) == 1, addresses
    finally:
        c.query("UPDATE ports SET device_id = $1 WHERE id = $2 RETURNING id", attacker["id"], port["id"])
    servers = [(sdk, sdk.compute.get_server(sid)) for sdk, sid in ((victim_sdk, victim["id"]),
                                                                   (mallory_sdk, attacker["id"]))]  # fmt: skip
    for sdk, server in servers:
        sdk.compute.delete_server(server)
    for sdk, server in servers:
        sdk.compute.wait_for_delete(server, wait=60)
    # The user's own port outlives its server (detached, not deleted), and nothing of the victim's stays.
    assert mallory.ok("GET", f"/network/v2.0/ports/{port['id']}")["port"]["device_id"] == ""
    assert c.query("SELECT count(*) AS n FROM ports WHERE device_id = $1", victim["id"])[0]["n"] == 0
