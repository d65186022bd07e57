"""Server, flavor and action views: pure functions of rows."""

from datetime import UTC, datetime

import pytest

from services.api.compute.views import (
    addresses_view,
    event_view,
    flavor_view,
    host_id,
    server_status,
    server_view,
)

BASE = "http://api.example:8080"
T0 = datetime(2026, 1, 2, 3, 4, 5, 123456, tzinfo=UTC)


@pytest.mark.parametrize(
    ("vm_state", "task_state", "status"),
    [
        ("building", "scheduling", "BUILD"),
        ("building", "networking", "BUILD"),
        ("building", "spawning", "BUILD"),
        ("building", None, "BUILD"),
        ("active", None, "ACTIVE"),
        ("active", "powering-off", "ACTIVE"),
        ("active", "deleting", "ACTIVE"),
        ("active", "rebooting", "REBOOT"),
        ("active", "rebooting_hard", "HARD_REBOOT"),
        ("stopped", None, "SHUTOFF"),
        ("stopped", "powering-on", "SHUTOFF"),
        ("error", None, "ERROR"),
        ("error", "deleting", "ERROR"),
        ("deleted", None, "DELETED"),
        ("shelved", None, "UNKNOWN"),
    ],
)
def test_status_mapping(vm_state, task_state, status):
    assert server_status(vm_state, task_state) == status


def _row(**kw):
    row = {
        "id": "i-1",
        "name": "web",
        "project_id": "p1",
        "user_id": "u1",
        "vm_state": "active",
        "task_state": None,
        "power_state": 1,
        "metadata": {"a": "b"},
        "host": "cmp-1",
        "node": "cmp-1",
        "image_id": "img-1",
        "flavor_id": "1",
        "created_at": T0,
        "updated_at": T0,
        "launched_at": T0,
        "terminated_at": None,
        "access_ip_v4": None,
        "availability_zone": None,
        "key_name": "k",
        "hostname": "web",
        "reservation_id": "r-1",
        "launch_index": 0,
    }
    row.update(kw)
    return row


ADDRS = [
    {"network_name": "private", "ip_address": "10.0.0.5", "ip_version": 4, "mac_address": "fa:16:3e:00:00:01"},
    {"network_name": "private", "ip_address": "10.0.0.6", "ip_version": 4, "mac_address": "fa:16:3e:00:00:02"},
    {"network_name": "other", "ip_address": "10.1.0.5", "ip_version": 4, "mac_address": "fa:16:3e:00:00:03"},
]


def test_addresses_are_grouped_by_network_name():
    view = addresses_view(ADDRS)
    assert list(view) == ["private", "other"]
    assert view["private"][1] == {
        "addr": "10.0.0.6",
        "version": 4,
        "OS-EXT-IPS:type": "fixed",
        "OS-EXT-IPS-MAC:mac_addr": "fa:16:3e:00:00:02",
    }


def test_server_view_shape_for_a_member():
    view = server_view(_row(), base=BASE, addresses=ADDRS, host_zone="az1")
    assert view["status"] == "ACTIVE"
    assert view["tenant_id"] == "p1"
    assert view["created"] == "2026-01-02T03:04:05Z"
    assert view["OS-SRV-USG:launched_at"] == "2026-01-02T03:04:05.123456"
    assert view["flavor"] == {"id": "1", "links": [{"rel": "bookmark", "href": f"{BASE}/compute/flavors/1"}]}
    assert view["image"]["id"] == "img-1"
    assert view["links"][0] == {"rel": "self", "href": f"{BASE}/compute/v2.1/servers/i-1"}
    assert view["hostId"] == host_id("p1", "cmp-1") != ""
    assert view["OS-EXT-AZ:availability_zone"] == "az1"
    assert view["OS-EXT-STS:power_state"] == 1
    assert view["accessIPv4"] == ""
    assert len(view["addresses"]["private"]) == 2
    assert not any(k.startswith("OS-EXT-SRV-ATTR") for k in view), "host details are for admins"
    assert "fault" not in view


def test_server_view_for_admin_names_the_host():
    view = server_view(_row(), base=BASE, is_admin=True)
    assert view["OS-EXT-SRV-ATTR:host"] == "cmp-1"
    assert view["OS-EXT-SRV-ATTR:hypervisor_hostname"] == "cmp-1"


def test_unplaced_server_has_empty_host_id_and_requested_zone():
    view = server_view(
        _row(host=None, vm_state="building", task_state="scheduling", availability_zone="az2"), base=BASE
    )
    assert view["hostId"] == ""
    assert view["status"] == "BUILD"
    assert view["OS-EXT-AZ:availability_zone"] == "az2"


def test_host_id_differs_per_project():
    assert host_id("p1", "h") != host_id("p2", "h")


def test_fault_is_shown_to_the_owner_when_in_error():
    fault = {"code": 500, "message": "No valid host", "details": "filter RamFilter removed 2 hosts",
             "created_at": T0, "host": "cmp-1"}  # fmt: skip
    view = server_view(_row(vm_state="error"), base=BASE, fault=fault)
    assert view["status"] == "ERROR"
    assert view["fault"] == {
        "code": 500,
        "message": "No valid host",
        "details": "filter RamFilter removed 2 hosts",
        "created": "2026-01-02T03:04:05Z",
    }
    assert server_view(_row(vm_state="error"), base=BASE, fault=fault, is_admin=True)["fault"]["host"] == "cmp-1"
    # A fault left from an earlier failure is not shown once the server recovered.
    assert "fault" not in server_view(_row(), base=BASE, fault=fault)


def test_server_booted_without_image_shows_empty_string():
    assert server_view(_row(image_id=None), base=BASE)["image"] == ""


def test_flavor_view():
    row = {"id": "1", "name": "m1.tiny", "vcpus": 1, "ram_mb": 128, "disk_gb": 1, "ephemeral_gb": 0,
           "swap_mb": 0, "rxtx_factor": 1.0, "is_public": True}  # fmt: skip
    assert flavor_view(row, BASE, detail=False) == {
        "id": "1",
        "name": "m1.tiny",
        "links": [
            {"rel": "self", "href": f"{BASE}/compute/v2.1/flavors/1"},
            {"rel": "bookmark", "href": f"{BASE}/compute/flavors/1"},
        ],
    }
    full = flavor_view(row, BASE)
    assert (full["ram"], full["vcpus"], full["disk"], full["swap"]) == (128, 1, 1, "")
    assert flavor_view({**row, "swap_mb": 512}, BASE)["swap"] == 512


def test_event_view_keeps_details_and_hides_traceback_from_members():
    row = {"event": "compute_build_and_run_instance", "start_time": T0, "finish_time": None, "result": None,
           "host": None, "details": "image download failed"}  # fmt: skip
    view = event_view(row, is_admin=False)
    assert view["details"] == "image download failed"
    assert view["host"] == ""
    assert view["finish_time"] is None
    assert "traceback" not in view
    assert event_view(row, is_admin=True)["traceback"] == "image download failed"
