"""Boot, read, power and delete servers through the HTTP API with openstacksdk, on libvirt test:///default."""

import base64
import json
import os
import urllib.error
import urllib.request
from urllib.parse import urlparse

import pytest

from tests.fixtures.cloud import wait_status

pytestmark = pytest.mark.functional


def assert_usage_matches_allocations(cloud):
    """Every host's used amounts are exactly the sum of its allocations, and within its limits."""
    rows = cloud.query(
        "SELECT n.host, n.vcpus_used, n.memory_mb_used, n.local_gb_used,"
        " (n.memory_mb - n.reserved_host_memory_mb) * n.ram_allocation_ratio AS ram_limit,"
        " COALESCE(SUM(a.vcpus), 0) AS v, COALESCE(SUM(a.memory_mb), 0) AS m, COALESCE(SUM(a.disk_gb), 0) AS d"
        " FROM compute_nodes n LEFT JOIN allocations a ON a.compute_node_id = n.id GROUP BY n.id"
    )
    for r in rows:
        assert (r["vcpus_used"], r["memory_mb_used"], r["local_gb_used"]) == (r["v"], r["m"], r["d"]), r
        assert r["memory_mb_used"] <= r["ram_limit"], r


def _boot(conn, name, **kw):
    flavor = conn.compute.find_flavor("m1.tiny", ignore_missing=False)
    image = conn.image.find_image("tiny", ignore_missing=False)
    net = conn.network.find_network("private", ignore_missing=False)
    return conn.compute.create_server(
        name=name, flavor_id=flavor.id, image_id=image.id, networks=[{"uuid": net.id}], **kw
    )


def _raw(cloud, method, path, body=None, raw_body=None):
    """A plain HTTP request with the admin token: (status, json body, headers)."""
    token = cloud.sdk().session.get_token()
    data = raw_body if raw_body is not None else (json.dumps(body).encode() if body is not None else None)
    req = urllib.request.Request(
        f"{cloud.endpoint}{path}", data=data, method=method,
        headers={"X-Auth-Token": token, "Content-Type": "application/json"},
    )  # fmt: skip
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            text = r.read()
            return r.status, (json.loads(text) if text else None), r.headers
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null"), e.headers


def test_boot_to_active_and_delete_releases_everything(cloud):
    conn = cloud.sdk()
    server = _boot(conn, "fn-boot")
    server = wait_status(conn, server.id, {"ACTIVE", "ERROR"})
    assert server.status == "ACTIVE", server.fault
    assert server.power_state == 1
    assert server.compute_host in {"compute-0", "compute-1"}
    addrs = server.addresses["private"]
    assert addrs[0]["addr"].startswith("10.99.0.")
    assert addrs[0]["OS-EXT-IPS-MAC:mac_addr"].startswith("fa:16:3e")
    ports = list(conn.network.ports(device_id=server.id))
    assert len(ports) == 1
    hv = {h.name: h for h in conn.compute.hypervisors(details=True)}
    assert hv[server.compute_host].memory_used >= 128

    conn.compute.delete_server(server.id)
    conn.compute.wait_for_delete(server, wait=60)
    assert list(conn.network.ports(device_id=server.id)) == []
    assert cloud.query("SELECT * FROM allocations WHERE instance_id = $1", server.id) == [], "claim not released"
    assert_usage_matches_allocations(cloud)


def test_ports_are_made_at_create_and_a_full_subnet_is_a_409_that_leaves_nothing(cloud):
    """The API makes a server's ports in the transaction that creates it, and the claim binds them to the chosen
    host: a subnet without a free address is a 409 at POST (a batch is all or nothing), never a server that
    fails later, and a deleted server's address is free again."""
    conn = cloud.sdk()
    net = conn.network.create_network(name="fn-tiny")
    subnet = conn.network.create_subnet(network_id=net.id, cidr="10.98.0.0/30", ip_version=4)  # one address
    flavor = conn.compute.find_flavor("m1.tiny", ignore_missing=False)
    image = conn.image.find_image("tiny", ignore_missing=False)

    def create(name, **extra):
        body = {"server": {"name": name, "flavorRef": flavor.id, "imageRef": image.id,
                           "networks": [{"uuid": net.id}], **extra}}  # fmt: skip
        return _raw(cloud, "POST", "/compute/v2.1/servers", body)

    def refused(name, **extra):
        before = ({s.id for s in conn.compute.servers()}, len(cloud.query("SELECT id FROM instances")))
        ports_before = len(list(conn.network.ports()))
        status, reply, headers = create(name, **extra)
        assert status == 409, reply
        assert subnet.id in reply["conflictingRequest"]["message"], reply
        assert headers["x-openstack-request-id"].startswith("req-")
        after = ({s.id for s in conn.compute.servers()}, len(cloud.query("SELECT id FROM instances")))
        assert after == before, "a server was created"
        assert len(list(conn.network.ports())) == ports_before, "a port was left behind"

    try:
        refused("fn-tiny-pair", min_count=2, max_count=2)  # the first one's port is rolled back with the second
        for _ in range(2):  # the second time on the address the deleted server gave back
            status, reply, _ = create("fn-tiny-1")
            assert status == 202, reply
            server = wait_status(conn, reply["server"]["id"], {"ACTIVE", "ERROR"})
            assert server.status == "ACTIVE", server.fault
            [port] = conn.network.ports(device_id=server.id)
            assert port.fixed_ips == [{"subnet_id": subnet.id, "ip_address": "10.98.0.2"}]
            assert (port.binding_host_id, port.status) == (server.compute_host, "ACTIVE")
            refused("fn-tiny-2")
            conn.compute.delete_server(server.id)
            conn.compute.wait_for_delete(server, wait=60)
            assert list(conn.network.ports(device_id=server.id)) == []
    finally:
        for s in conn.compute.servers(name="fn-tiny"):
            conn.compute.delete_server(s.id)
            conn.compute.wait_for_delete(s, wait=60)
        conn.network.delete_network(net.id)


def test_list_show_and_power_operations(cloud):
    conn = cloud.sdk()
    server = wait_status(conn, _boot(conn, "fn-power").id, {"ACTIVE", "ERROR"})
    assert server.status == "ACTIVE", server.fault
    assert server.id in {s.id for s in conn.compute.servers()}
    conn.compute.stop_server(server)
    assert wait_status(conn, server.id, {"SHUTOFF"}).power_state == 4
    status, body, _ = _raw(cloud, "POST", f"/compute/v2.1/servers/{server.id}/action", {"os-stop": None})
    assert status == 409 and "stopped" in body["conflictingRequest"]["message"]
    conn.compute.start_server(server)
    wait_status(conn, server.id, {"ACTIVE"})
    conn.compute.reboot_server(server, "SOFT")
    assert wait_status(conn, server.id, {"ACTIVE"}).power_state == 1
    out = conn.compute.get_server_console_output(server)["output"]
    assert out  # the test driver has no serial console; the driver says so in the text
    actions = [a.action for a in conn.compute.server_actions(server)]
    assert {"create", "stop", "start", "reboot"} <= set(actions)
    conn.compute.delete_server(server.id)
    conn.compute.wait_for_delete(server, wait=60)


def test_request_id_reaches_every_service_and_the_action_events(cloud):
    conn = cloud.sdk()
    flavor = conn.compute.find_flavor("m1.tiny")
    image = conn.image.find_image("tiny")
    net = conn.network.find_network("private")
    status, body, headers = _raw(cloud, "POST", "/compute/v2.1/servers", {"server": {
        "name": "fn-reqid", "flavorRef": flavor.id, "imageRef": image.id, "networks": [{"uuid": net.id}]}})  # fmt: skip
    assert status == 202, body
    request_id = headers["x-openstack-request-id"]
    assert request_id.startswith("req-")
    server_id = body["server"]["id"]
    assert wait_status(conn, server_id, {"ACTIVE", "ERROR"}).status == "ACTIVE"
    seen = cloud.grep_logs(request_id)
    for service in ("api", "scheduler0", "compute"):  # the ports were made by the API, bound by the claim
        assert seen[service] > 0, f"{request_id} missing from the {service} log: {seen}"
    status, body, _ = _raw(cloud, "GET", f"/compute/v2.1/servers/{server_id}/os-instance-actions/{request_id}")
    assert status == 200, body
    events = body["instanceAction"]["events"]
    names = [e["event"] for e in events]
    assert "scheduler_select_destination" in names and "compute_build_and_run_instance" in names
    assert all(e["finish_time"] and e["result"] == "Success" for e in events), events
    assert any(e.get("host", "").startswith("compute-") for e in events), events
    conn.compute.delete_server(server_id)


@pytest.mark.parametrize(
    ("body", "raw", "needle"),
    [
        (None, b"{not json", "Malformed request body"),
        ({"server": {"name": 5, "flavorRef": "1", "imageRef": "x"}}, None, "name"),
        ({"server": {"flavorRef": "1", "imageRef": "x"}}, None, "name"),
        ({"server": {"name": "x", "flavorRef": "no-such-flavor", "imageRef": "IMAGE", "networks": "auto"}}, None,
         "no-such-flavor"),
        ({"server": {"name": "x", "flavorRef": "1", "imageRef": "00000000-0000-0000-0000-000000000000",
                     "networks": "auto"}}, None, "00000000-0000-0000-0000-000000000000"),
        ({"server": {"name": "x", "flavorRef": "1", "imageRef": "IMAGE",
                     "networks": [{"uuid": "11111111-1111-1111-1111-111111111111"}]}}, None,
         "11111111-1111-1111-1111-111111111111"),
        ({"server": {"name": "x", "flavorRef": "1", "imageRef": "IMAGE", "networks": "auto", "min_count": "two"}},
         None, "min_count"),
        ({"server": {"name": "x", "flavorRef": "1", "imageRef": "IMAGE", "networks": "auto",
                     "user_data": "***not base64***"}}, None, "user_data"),
        ({"server": {"name": "x", "flavorRef": "1", "imageRef": "IMAGE", "networks": "auto",
                     "config_drive": "maybe"}}, None, "config_drive"),
    ],
)  # fmt: skip
def test_bad_input_is_a_named_400_and_creates_nothing(cloud, body, raw, needle):
    conn = cloud.sdk()
    image = conn.image.find_image("tiny")
    if body is not None:
        body = json.loads(json.dumps(body).replace("IMAGE", image.id))
    before = {s.id for s in conn.compute.servers()}
    ports_before = len(list(conn.network.ports()))
    status, reply, headers = _raw(cloud, "POST", "/compute/v2.1/servers", body, raw)
    assert status == 400, reply
    assert needle in reply["badRequest"]["message"], reply
    assert reply["badRequest"]["code"] == 400
    assert headers["x-openstack-request-id"].startswith("req-")
    assert {s.id for s in conn.compute.servers()} - before == set(), "a server was created"
    assert len(list(conn.network.ports())) <= ports_before, "a port was created"


def test_unknown_server_is_item_not_found(cloud):
    status, body, _ = _raw(cloud, "GET", "/compute/v2.1/servers/nope")
    assert status == 404 and "itemNotFound" in body


def test_config_drive_is_built_recorded_and_shown(cloud):
    conn = cloud.sdk()
    flavor = conn.compute.find_flavor("m1.tiny")
    image = conn.image.find_image("tiny")
    net = conn.network.find_network("private")
    status, body, headers = _raw(cloud, "POST", "/compute/v2.1/servers", {"server": {
        "name": "fn-cd", "flavorRef": flavor.id, "imageRef": image.id, "networks": [{"uuid": net.id}],
        "config_drive": "true"}})  # fmt: skip
    assert status == 202, body
    server_id, request_id = body["server"]["id"], headers["x-openstack-request-id"]
    assert wait_status(conn, server_id, {"ACTIVE", "ERROR"}).status == "ACTIVE"
    status, body, _ = _raw(cloud, "GET", f"/compute/v2.1/servers/{server_id}")
    assert body["server"]["config_drive"] == "True"
    status, body, _ = _raw(cloud, "GET", f"/compute/v2.1/servers/{server_id}/os-instance-actions/{request_id}")
    events = {e["event"]: e for e in body["instanceAction"]["events"]}
    assert events["compute_build_config_drive"]["result"] == "Success", events
    assert events["compute_build_config_drive"]["host"].startswith("compute-")
    plain = wait_status(conn, _boot(conn, "fn-no-cd").id, {"ACTIVE", "ERROR"})
    assert _raw(cloud, "GET", f"/compute/v2.1/servers/{plain.id}")[1]["server"]["config_drive"] == ""
    conn.compute.delete_server(server_id)
    conn.compute.delete_server(plain.id)


def test_user_data_and_key_reach_the_instance_record(cloud):
    conn = cloud.sdk()
    key = conn.compute.create_keypair(name="fn-key", public_key="ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGx0 fn@test")
    server = _boot(conn, "fn-ud", key_name=key.name, user_data=base64.b64encode(b"#!/bin/sh\necho hi\n").decode())
    server = wait_status(conn, server.id, {"ACTIVE", "ERROR"})
    assert server.status == "ACTIVE", server.fault
    assert server.key_name == "fn-key"
    conn.compute.delete_server(server.id)
    conn.compute.delete_keypair(key)


def test_build_failure_on_every_host_is_error_with_the_cause_chain(cloud):
    """An image whose file is gone fails at the image step on each host: rescheduled, then ERROR naming both."""
    conn = cloud.sdk()
    image = conn.image.create_image(name="vanishing", disk_format="qcow2", container_format="bare",
                                    data=b"\0" * 4096, visibility="public")  # fmt: skip
    # Remove the stored bytes the computes download from, as a broken store would.
    location = cloud.query("SELECT location FROM images WHERE id = $1", image.id)[0]["location"]
    os.unlink(urlparse(location).path)
    flavor = conn.compute.find_flavor("m1.tiny")
    net = conn.network.find_network("private")
    server = conn.compute.create_server(name="fn-fail", flavor_id=flavor.id, image_id=image.id,
                                        networks=[{"uuid": net.id}])  # fmt: skip
    server = wait_status(conn, server.id, {"ERROR", "ACTIVE"}, timeout=90)
    assert server.status == "ERROR"
    message = server.fault["message"]
    assert "compute-0" in message and "compute-1" in message, message
    assert "image" in message, message
    assert cloud.query("SELECT * FROM allocations WHERE instance_id = $1", server.id) == [], "claim leaked"
    assert_usage_matches_allocations(cloud)
    assert list(conn.network.ports(device_id=server.id)) == [], "ports of failed attempts leaked"
    conn.compute.delete_server(server.id)
    conn.compute.wait_for_delete(server, wait=60)
