"""The isolation matrix: two projects on one real cloud; the attacker, an ordinary member of project A, tries
every route against project B's objects, uses B's objects in its own creates, and tries every route with an
unscoped token; a member of B whose role was removed tries every route with the token they still hold.

Expected answers are 403/404 (400 where Nova answers so: a create naming a missing object, a Compute URL of
another project), no response to the attacker ever contains a marker of B's objects, and nothing of B changes
(checked in the database before and after).
"""

from __future__ import annotations

import base64
import json
import re
import secrets
import subprocess
import tempfile
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests

from common.config import new_conf
from tests.fixtures.api import Client, password_token
from tests.fixtures.cloud import ADMIN_PASSWORD, wait_status

pytestmark = pytest.mark.functional

MARK = f"victim{secrets.token_hex(4)}"  # in the names and data of B's objects: it must never reach the attacker
CIDR_B = "10.77.0.0/24"


@dataclass
class World:
    admin: Client
    alice: Client  # member of A: the attacker
    bob: Client  # member of B: the victim
    endpoint: str
    ids: dict[str, str] = field(default_factory=dict)  # B's objects (and the people), by kind


def _qcow2(path: Path) -> bytes:
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(path), "16M"], check=True)
    return path.read_bytes()


def _public_key(tmp: Path) -> str:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp / "k")], check=True)
    return (tmp / "k.pub").read_text().strip()


@pytest.fixture(scope="module")
def world(cloud) -> World:
    endpoint = cloud.endpoint
    admin = Client(endpoint, password_token(endpoint, "admin", ADMIN_PASSWORD, "admin"))
    member = admin.ok("GET", "/identity/v3/roles?name=member")["roles"][0]["id"]
    people = {}
    projects = {name: admin.ok("POST", "/identity/v3/projects", {"project": {"name": name}})["project"]["id"]
                for name in ("iso-a", "iso-b")}  # fmt: skip
    for who, project in (("alice", "iso-a"), ("bob", "iso-b"), ("carol", "iso-b")):
        pid = projects[project]
        user = admin.ok("POST", "/identity/v3/users", {"user": {"name": who, "password": f"{who}-pw",
                                                                "default_project_id": pid}})["user"]  # fmt: skip
        admin.ok("PUT", f"/identity/v3/projects/{pid}/users/{user['id']}/roles/{member}")
        people[who] = (user["id"], pid)
    w = World(admin, Client(endpoint, password_token(endpoint, "alice", "alice-pw", "iso-a")),
              Client(endpoint, password_token(endpoint, "bob", "bob-pw", "iso-b")), endpoint)  # fmt: skip
    w.ids.update(alice=people["alice"][0], project_a=people["alice"][1], bob=people["bob"][0],
                 project_b=people["bob"][1], carol=people["carol"][0], member_role=member)  # fmt: skip
    bob = w.bob
    with tempfile.TemporaryDirectory() as tmp:
        key = _public_key(Path(tmp))
        image_data = _qcow2(Path(tmp) / "b.qcow2")
    keypair = {"keypair": {"name": f"bkey{secrets.token_hex(3)}", "public_key": key}}
    w.ids["keypair"] = bob.ok("POST", "/compute/v2.1/os-keypairs", keypair)["keypair"]["name"]
    net = bob.ok("POST", "/network/v2.0/networks", {"network": {"name": f"{MARK}-net"}})["network"]
    subnet = bob.ok("POST", "/network/v2.0/subnets", {"subnet": {"network_id": net["id"], "cidr": CIDR_B,
                                                                 "ip_version": 4, "name": f"{MARK}-sub"}})  # fmt: skip
    port = bob.ok("POST", "/network/v2.0/ports", {"port": {"network_id": net["id"], "name": f"{MARK}-port"}})
    sg = bob.ok("POST", "/network/v2.0/security-groups", {"security_group": {"name": f"{MARK}-sg"}})
    rule = bob.ok("POST", "/network/v2.0/security-group-rules", {"security_group_rule": {
        "security_group_id": sg["security_group"]["id"], "direction": "ingress", "protocol": "tcp",
        "port_range_min": 22, "port_range_max": 22, "description": f"{MARK}-rule"}})  # fmt: skip
    image = bob.ok("POST", "/image/v2/images", {"name": f"{MARK}-img", "disk_format": "qcow2",
                                                "container_format": "bare", "visibility": "private"})  # fmt: skip
    bob.ok("PUT", f"/image/v2/images/{image['id']}/file", data=image_data,
           headers={"Content-Type": "application/octet-stream"})  # fmt: skip
    group = bob.ok("POST", "/compute/v2.1/os-server-groups",
                   {"server_group": {"name": f"{MARK}-grp", "policies": ["anti-affinity"]}})  # fmt: skip
    flavor = admin.ok("GET", "/compute/v2.1/flavors?name=m1.tiny")["flavors"]
    flavor_id = next(f["id"] for f in flavor if f["name"] == "m1.tiny")
    tiny = next(i["id"] for i in admin.ok("GET", "/image/v2/images?name=tiny")["images"])
    server = bob.ok("POST", "/compute/v2.1/servers", {"server": {
        "name": f"{MARK}-vm", "flavorRef": flavor_id, "imageRef": tiny, "networks": [{"uuid": net["id"]}],
        "key_name": w.ids["keypair"], "metadata": {"secret": f"{MARK}-meta"},
        "user_data": base64.b64encode(f"{MARK}-userdata".encode()).decode()},
        "os:scheduler_hints": {"group": group["server_group"]["id"]}})["server"]  # fmt: skip
    active = wait_status(cloud.sdk("iso-b", "bob", "bob-pw"), server["id"], {"ACTIVE", "ERROR"})
    assert active.status == "ACTIVE", active.fault
    actions = bob.ok("GET", f"/compute/v2.1/servers/{server['id']}/os-instance-actions")["instanceActions"]
    w.ids.update(network=net["id"], subnet=subnet["subnet"]["id"], port=port["port"]["id"],
                 security_group=sg["security_group"]["id"], rule=rule["security_group_rule"]["id"],
                 image=image["id"], server_group=group["server_group"]["id"], server=server["id"],
                 request_id=actions[0]["request_id"], flavor=flavor_id, public_image=tiny)  # fmt: skip
    a_net = w.alice.ok("POST", "/network/v2.0/networks", {"network": {"name": "a-net"}})["network"]
    w.alice.ok("POST", "/network/v2.0/subnets", {"subnet": {"network_id": a_net["id"], "cidr": "10.78.0.0/24",
                                                            "ip_version": 4}})  # fmt: skip
    w.ids["a_network"] = a_net["id"]
    return w


def victim_state(cloud, project_b: str, bob: str) -> dict[str, list]:
    """Everything of project B (and bob's keys) in the database, minus bookkeeping columns."""
    tables = {
        "instances": "project_id = $1",
        "ports": "project_id = $1",
        "networks": "project_id = $1",
        "subnets": "project_id = $1",
        "security_groups": "project_id = $1",
        "security_group_rules": "project_id = $1",
        "images": "project_id = $1",
        "server_groups": "project_id = $1",
        "ip_allocations": "port_id IN (SELECT id FROM ports WHERE project_id = $1)",
        "port_security_groups": "port_id IN (SELECT id FROM ports WHERE project_id = $1)",
        "server_group_members": "group_id IN (SELECT id FROM server_groups WHERE project_id = $1)",
        "allocations": "instance_id IN (SELECT id FROM instances WHERE project_id = $1)",
        "role_assignments": "project_id = $1",
    }
    state = {}
    for table, where in tables.items():
        rows = cloud.query(f"SELECT to_jsonb(t) - 'updated_at' AS r FROM {table} t WHERE {where}", project_b)
        state[table] = sorted(json.dumps(r["r"], sort_keys=True, default=str) for r in rows)
    rows = cloud.query("SELECT to_jsonb(k) AS r FROM keypairs k WHERE user_id = $1", bob)
    state["keypairs"] = sorted(json.dumps(r["r"], sort_keys=True, default=str) for r in rows)
    return state


def routes() -> list[tuple[str, str, bool, bool]]:
    """Every route of the real application: (method, path template, public, unscoped_ok)."""
    from services.api.app import create_app

    class _Transport:
        def client(self) -> None:
            return None

    app = create_app(new_conf(), None, _Transport())  # type: ignore[arg-type]
    out = []
    for r in app.router.routes():
        if r.method == "HEAD":
            continue
        info = r.resource.get_info()
        path = info.get("formatter") or info.get("path")
        target = getattr(r.handler, "__func__", r.handler)
        out.append((r.method, path, bool(getattr(target, "__stratus_public__", False)),
                    bool(getattr(target, "__stratus_unscoped__", False))))  # fmt: skip
    assert len(out) > 90, "the route table looks incomplete"
    return out


def fill(path: str, ids: dict[str, str]) -> str:
    """A template with B's objects in its parameters (and the project-prefixed Compute form with B's project)."""
    network = path.startswith("/network")
    values = {
        "server_id": ids["server"], "request_id": ids["request_id"], "flavor_id": ids["flavor"], "key": "k",
        "name": ids["keypair"], "project_id": ids["project_b"], "hypervisor_id": "1", "aggregate_id": "1",
        "group_id": ids["security_group"] if network else ids["server_group"], "user_id": ids["bob"],
        "role_id": ids["member_role"], "domain_id": "default", "network_id": ids["network"],
        "subnet_id": ids["subnet"], "port_id": ids["port"], "rule_id": ids["rule"], "image_id": ids["image"],
        "alias": "binding", "url_project_id": ids["project_b"],
    }  # fmt: skip
    path = re.sub(r"\{url_project_id:[^}]*\}", "{url_project_id}", path)
    return re.sub(r"\{(\w+)\}", lambda m: values[m.group(1)], path)


def body_for(method: str, path: str, ids: dict[str, str]) -> Any:
    """A body that would do something real if the caller were allowed to, so a refusal is the authorisation's."""
    if method in ("GET", "DELETE"):
        return None
    if path.endswith("/action") and "servers" in path:
        return {"os-stop": None}
    if path.endswith("/action"):
        return {"add_host": {"host": "compute-0"}}
    if path.endswith("/file"):
        return None
    table: dict[str, Any] = {
        "servers": {"server": {"name": "pwned"}},
        "networks": {"network": {"name": "pwned"}},
        "subnets": {"subnet": {"name": "pwned"}},
        "ports": {"port": {"name": "pwned"}},
        "security-groups": {"security_group": {"name": "pwned"}},
        "images": [{"op": "replace", "path": "/name", "value": "pwned"}],
        "os-aggregates": {"aggregate": {"name": "pwned"}},
        "os-extra_specs": {"extra_specs": {"pwned": "1"}},
        "flavors": {"flavor": {"name": "pwned", "ram": 64, "vcpus": 1, "disk": 1}},
        "projects": {"project": {"name": "pwned"}},
        "users": {"user": {"name": "pwned", "password": "pwned"}},
        "roles": {"role": {"name": "pwned"}},
        "os-keypairs": {"keypair": {"name": "pwned", "public_key": "ssh-ed25519 AAAA pwned"}},
        "os-server-groups": {"server_group": {"name": "pwned", "policies": ["affinity"]}},
    }
    for part in reversed([p for p in path.split("/") if p and not p.startswith("{")]):
        if part in table:
            return table[part]
    return {}


# Reads any member may make (global objects, or the caller's own: listings are checked for leaks instead).
MEMBER_READS = {
    "/", "/identity", "/identity/", "/identity/v3", "/identity/v3/", "/identity/v3/auth/projects",
    "/identity/v3/auth/catalog", "/identity/v3/projects", "/identity/v3/roles", "/identity/v3/roles/{role_id}",
    "/identity/v3/role_assignments", "/identity/v3/domains", "/identity/v3/domains/{domain_id}", "/compute",
    "/compute/", "/compute/v2.1", "/compute/v2.1/", "/image", "/image/", "/image/versions", "/network",
    "/network/", "/network/v2.0", "/network/v2.0/", "/healthcheck", "/metrics",
    "/compute/v2.1/os-quota-sets/{project_id}/defaults",  # the cloud's defaults, the same for every project
}  # fmt: skip
_MEMBER_READ_RE = re.compile(
    r"^/compute/v2\.1(/\{url_project_id[^}]*\})?/(servers(/detail)?|flavors(/detail)?|flavors/\{flavor_id\}.*|"
    r"os-keypairs|limits|os-availability-zone(/detail)?|os-server-groups)$"
    r"|^/image/v2/images$|^/network/v2\.0/(networks|subnets|ports|security-groups|security-group-rules|"
    r"extensions|extensions/\{alias\})$"
)


# Creates in the caller's own project (their use of another project's objects is the next test's).
MEMBER_CREATES = {
    "/compute/v2.1/servers", "/compute/v2.1/os-keypairs", "/compute/v2.1/os-server-groups", "/image/v2/images",
    "/network/v2.0/networks", "/network/v2.0/subnets", "/network/v2.0/ports", "/network/v2.0/security-groups",
    "/network/v2.0/security-group-rules",
}  # fmt: skip


def member_may_read(method: str, template: str) -> bool:
    return method == "GET" and (template in MEMBER_READS or bool(_MEMBER_READ_RE.match(template)))


def test_member_of_another_project_is_refused_on_every_route(world, cloud):
    """Every route, called by A's member with B's objects in the path (and a body that would change them):
    403/404 (400 for a Compute URL naming B's project), reads of global or own objects only; no answer carries
    a marker of B's objects; nothing of B changes."""
    before = victim_state(cloud, world.ids["project_b"], world.ids["bob"])
    refused, allowed = 0, 0
    for method, template, public, _ in routes():
        if template == "/identity/v3/auth/tokens":
            continue  # token routes are checked with the subject-token header below
        path = fill(template, world.ids)
        status, doc = world.alice.call(method, path, body_for(method, template, world.ids))
        where = f"{method} {template} -> {status}: {str(doc)[:300]}"
        assert status < 500, where
        if "url_project_id" in template:
            assert status == 400 and "doesn't match" in str(doc), where
            refused += 1
        elif public or member_may_read(method, template):
            assert status in (200, 403, 404), where
            allowed += status == 200
        elif method == "POST" and template in MEMBER_CREATES:
            assert status in (200, 201, 202, 400, 409), where
        else:
            assert status in (403, 404), where
            refused += 1
    # Token routes: another user's token is not the member's to inspect or revoke.
    bob_token = world.bob.token
    for method in ("GET", "HEAD", "DELETE"):
        status, doc = world.alice.call(method, "/identity/v3/auth/tokens", headers={"X-Subject-Token": bob_token})
        assert status == 403, (method, status, doc)
    leaks = [t[:200] for t in world.alice.seen if MARK in t]
    assert leaks == [], leaks
    assert victim_state(cloud, world.ids["project_b"], world.ids["bob"]) == before
    assert world.bob.call("GET", f"/compute/v2.1/servers/{world.ids['server']}")[0] == 200
    print(f"\nisolation: {refused} refused, {allowed} global or own reads allowed")


def test_another_projects_objects_cannot_be_used_in_a_create(world, cloud):
    """Boot on B's network, port, private image, server group (hint), same_host server and key; a subnet or a
    port on B's network; a port in B's security group; a rule in (or naming) B's group."""
    ids, alice = world.ids, world.alice
    before = victim_state(cloud, ids["project_b"], ids["bob"])
    boot = {"name": "a-vm", "flavorRef": ids["flavor"], "imageRef": ids["public_image"],
            "networks": [{"uuid": ids["a_network"]}]}  # fmt: skip
    attempts = {
        "B's network": {"server": {**boot, "networks": [{"uuid": ids["network"]}]}},
        "B's port": {"server": {**boot, "networks": [{"port": ids["port"]}]}},
        "B's private image": {"server": {**boot, "imageRef": ids["image"]}},
        "B's key": {"server": {**boot, "key_name": ids["keypair"]}},
        "B's server group": {"server": boot, "os:scheduler_hints": {"group": ids["server_group"]}},
        "B's server as same_host": {"server": boot, "os:scheduler_hints": {"same_host": [ids["server"]]}},
        "B's server as different_host": {"server": boot, "os:scheduler_hints": {"different_host": [ids["server"]]}},
    }
    for what, body in attempts.items():
        status, doc = alice.call("POST", "/compute/v2.1/servers", body)
        message = doc["badRequest"]["message"] if status == 400 else ""
        assert re.search(r"not found|could not be found|not one of your keys", message), (what, status, doc)
    creates = [
        ("/network/v2.0/subnets", {"subnet": {"network_id": ids["network"], "cidr": "10.79.0.0/24", "ip_version": 4}}),
        ("/network/v2.0/ports", {"port": {"network_id": ids["network"]}}),
        ("/network/v2.0/ports", {"port": {"network_id": ids["a_network"], "security_groups": [ids["security_group"]]}}),
        ("/network/v2.0/security-group-rules", {"security_group_rule": {
            "security_group_id": ids["security_group"], "direction": "ingress"}}),
        ("/network/v2.0/security-group-rules", {"security_group_rule": {
            "security_group_id": alice_default_group(alice), "direction": "ingress",
            "remote_group_id": ids["security_group"]}}),
    ]  # fmt: skip
    for path, body in creates:
        status, doc = alice.call("POST", path, body)
        assert status in (403, 404), (path, body, status, doc)
    assert cloud.query("SELECT count(*) AS n FROM instances WHERE project_id = $1", ids["project_a"])[0]["n"] == 0
    assert victim_state(cloud, ids["project_b"], ids["bob"]) == before
    assert [t[:200] for t in alice.seen if MARK in t] == []


def alice_default_group(alice: Client) -> str:
    groups = alice.ok("GET", "/network/v2.0/security-groups?name=default")["security_groups"]
    return groups[0]["id"]


def test_only_the_cloud_binds_a_port_to_a_server(world, cloud):
    """A member cannot name a server (another project's, or its own) as a port's device or take the owner
    compute:nova, on create or update; an admin cannot bind a port to another project's server; and a port row
    that names B's server anyway (written past the API) is never taken for one of B's ports."""
    ids, alice = world.ids, world.alice
    before = victim_state(cloud, ids["project_b"], ids["bob"])
    for body in ({"device_id": ids["server"]}, {"device_owner": "compute:nova"},
                 {"device_id": ids["server"], "device_owner": "compute:nova"}):  # fmt: skip
        status, doc = alice.call("POST", "/network/v2.0/ports", {"port": {"network_id": ids["a_network"], **body}})
        assert status == 403 and "only the cloud binds" in doc["NeutronError"]["message"], (body, status, doc)
    port = alice.ok("POST", "/network/v2.0/ports", {"port": {"network_id": ids["a_network"]}})["port"]
    status, doc = alice.call("PUT", f"/network/v2.0/ports/{port['id']}", {"port": {"device_id": ids["server"]}})
    assert status == 403, doc
    admin_port = world.admin.call("POST", "/network/v2.0/ports", {"port": {
        "network_id": ids["a_network"], "project_id": ids["project_a"], "device_id": ids["server"],
        "device_owner": "compute:nova"}})  # fmt: skip
    assert admin_port[0] == 400 and "another project" in str(admin_port[1]), admin_port
    assert victim_state(cloud, ids["project_b"], ids["bob"]) == before
    # Past the API: the attacker's port claims B's server in the database. Every lookup by device ignores it.
    cloud.query("UPDATE ports SET device_id = $1, device_owner = 'compute:nova' WHERE id = $2 RETURNING id",
                ids["server"], port["id"])  # fmt: skip
    try:
        shown = world.bob.ok("GET", f"/compute/v2.1/servers/{ids['server']}")["server"]
        addresses = [a["addr"] for net in shown["addresses"].values() for a in net]
        assert addresses and all(a.startswith("10.77.0.") for a in addresses), addresses
        got = _device_lookups(cloud, ids["server"])
        assert port["id"] not in got["instance_ports"] and port["id"] not in got["release"], got
    finally:
        cloud.query("UPDATE ports SET device_id = '', device_owner = '' WHERE id = $1 RETURNING id", port["id"])
    alice.ok("DELETE", f"/network/v2.0/ports/{port['id']}")


def _device_lookups(cloud, server_id: str) -> dict[str, list[str]]:
    """The ports the reschedule read (``instance_ports``) and the release would take for ``server_id``, read in
    a transaction that is rolled back (the release is not kept)."""
    import asyncio

    import asyncpg

    from common.db import networks as db_networks

    async def run() -> dict[str, list[str]]:
        conn = await asyncpg.connect(cloud.dsn)
        try:
            tx = conn.transaction()
            await tx.start()
            ports = [p["id"] for p in await db_networks.instance_ports(conn, server_id)]
            released = await db_networks.release_instance_ports(conn, server_id)
            await tx.rollback()
            return {"instance_ports": ports, "release": released["deleted"] + released["unbound"]}
        finally:
            await conn.close()

    return asyncio.run(run())


def test_unscoped_token_may_only_list_projects_and_get_a_scoped_token(world, cloud):
    """An unscoped token (any user can get one) reaches only the routes Keystone allows it; every other route
    answers 401/403, creates included, and nothing leaks or changes."""
    ids = world.ids
    before = victim_state(cloud, ids["project_b"], ids["bob"])
    unscoped = Client(world.endpoint, password_token(world.endpoint, "alice", "alice-pw", None))
    checked = 0
    for method, template, public, unscoped_ok in routes():
        if public or unscoped_ok:
            continue
        status, doc = unscoped.call(method, fill(template, ids), body_for(method, template, ids))
        assert status in (401, 403), (method, template, status, str(doc)[:300])
        checked += 1
    projects = unscoped.ok("GET", "/identity/v3/auth/projects")["projects"]
    assert [p["id"] for p in projects] == [ids["project_a"]]
    assert unscoped.ok("GET", f"/identity/v3/users/{ids['alice']}/projects")["projects"][0]["id"] == ids["project_a"]
    assert unscoped.call("GET", f"/identity/v3/users/{ids['bob']}")[0] == 404
    assert unscoped.call("GET", f"/identity/v3/users/{ids['bob']}/projects")[0] == 403
    subject = {"X-Subject-Token": unscoped.token}
    assert unscoped.call("GET", "/identity/v3/auth/tokens", headers=subject)[0] == 200
    scoped = requests.post(f"{world.endpoint}/identity/v3/auth/tokens", timeout=30, json={"auth": {
        "identity": {"methods": ["token"], "token": {"id": unscoped.token}},
        "scope": {"project": {"id": ids["project_a"]}}}})  # fmt: skip
    assert scoped.status_code == 201, scoped.text
    assert [t[:200] for t in unscoped.seen if MARK in t] == []
    assert victim_state(cloud, ids["project_b"], ids["bob"]) == before
    print(f"\nunscoped: {checked} routes refused")


def test_a_removed_role_ends_the_tokens_that_carry_it(world, cloud):
    """carol (member of B) holds a token; the admin removes her role; the token is refused on every route at
    once, cannot mint a new one, and a new password login cannot scope to B."""
    ids = world.ids
    token = password_token(world.endpoint, "carol", "carol-pw", "iso-b")
    carol = Client(world.endpoint, token)
    assert carol.call("GET", f"/compute/v2.1/servers/{ids['server']}")[0] == 200
    world.admin.ok(
        "DELETE", f"/identity/v3/projects/{ids['project_b']}/users/{ids['carol']}/roles/{ids['member_role']}"
    )
    before = victim_state(cloud, ids["project_b"], ids["bob"])
    checked = 0
    for method, template, public, _ in routes():
        if public:
            continue
        status, doc = carol.call(method, fill(template, ids), body_for(method, template, ids))
        assert status == 401, (method, template, status, str(doc)[:300])
        checked += 1
    again = requests.post(f"{world.endpoint}/identity/v3/auth/tokens", timeout=30, json={"auth": {
        "identity": {"methods": ["token"], "token": {"id": token}}}})  # fmt: skip
    assert again.status_code == 401, again.text
    login = requests.post(f"{world.endpoint}/identity/v3/auth/tokens", timeout=30, json={"auth": {
        "identity": {"methods": ["password"], "password": {"user": {"name": "carol", "password": "carol-pw",
                                                                    "domain": {"name": "Default"}}}},
        "scope": {"project": {"id": ids["project_b"]}}}})  # fmt: skip
    assert login.status_code == 401, login.text
    assert victim_state(cloud, ids["project_b"], ids["bob"]) == before
    print(f"\nremoved role: {checked} routes refused")


def test_a_revoked_token_is_refused_and_a_new_one_works(world):
    token = password_token(world.endpoint, "bob", "bob-pw", "iso-b")
    bob = Client(world.endpoint, token)
    assert bob.call("GET", "/compute/v2.1/servers")[0] == 200
    status, _ = world.bob.call("DELETE", "/identity/v3/auth/tokens", headers={"X-Subject-Token": token})
    assert status == 204
    assert bob.call("GET", "/compute/v2.1/servers")[0] == 401
    assert world.bob.call("GET", "/compute/v2.1/servers")[0] == 200  # only that token went


def test_malformed_tokens_are_a_401(world, cloud):
    """A correctly signed token without ``exp`` (or with claims of the wrong type), and a header that is not
    ASCII: 401 in the API's error shape, and the API's log line of the refusal carries the request id."""
    import jwt

    secret = cloud.sections["api"]["token_secret"]
    claims = {"sub": world.ids["alice"], "un": "alice", "pid": world.ids["project_a"], "pn": "iso-a",
              "roles": ["member"], "iat": 1, "aud": "stratus", "jti": uuid.uuid4().hex}  # fmt: skip
    tokens = [
        jwt.encode(bad, secret, algorithm="HS256")
        for bad in (claims, {**claims, "exp": 2**40, "roles": "member"}, {**claims, "exp": 2**40, "sub": 7})
    ]
    for token in [*tokens, b"\xff\xfe-not-utf8"]:
        r = requests.get(f"{world.endpoint}/compute/v2.1/servers", headers={"X-Auth-Token": token}, timeout=30)
        assert r.status_code == 401 and r.json()["unauthorized"]["code"] == 401, (token, r.status_code, r.text)
        request_id = r.headers["x-openstack-request-id"]
        assert cloud.grep_logs(request_id)["api"] >= 1, f"no API log line names {request_id}"
