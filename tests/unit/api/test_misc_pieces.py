"""instance_to_wire, key fingerprints, power-action guards, quota/service state helpers, stratus-manage args."""

import json
from datetime import UTC, datetime
from decimal import Decimal
from ipaddress import IPv4Address

import pytest

from common import exceptions
from common.cmd.manage import _parser
from services.api.compute import instance_to_wire
from services.api.compute.infra import service_state
from services.api.compute.keypairs import fingerprint
from services.api.compute.server_actions import POWER_ACTIONS, check_state

ED25519 = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIAHZTYmcRMbOdlfW28kJRw55czoEwIcPgbjgmkKSCqyG root@vm"
RSA = (
    "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAAAgQDPTBVf1CDcjVXx3sUtfdYJiU1X5XJ/j9VBKyEKRc0qRBzkMDP4AadZWboEOH3wKbDK8Eej0"
    "2beymzhBPLgOnlodQGIn5HPsKUffXRfVBXWWJroD4RtvUcbJXE5oXTVvHbRgSWE0y4wAtTGh5sbHgXDmRgif+EeHaa1Z5nRtx9Q3w== root@vm"
)


def test_instance_to_wire_is_json_and_carries_networks():
    row = {
        "id": "i1",
        "created_at": datetime(2026, 1, 1, tzinfo=UTC),
        "launched_at": None,
        "flavor": {"id": "1", "vcpus": 1},
        "image": {"id": "img", "location": "file:///x"},
        "requested_networks": [{"uuid": "n1"}],
        "power_state": 0,
        "weird": [Decimal("1.5"), IPv4Address("10.0.0.1")],
    }
    wire = instance_to_wire(row)
    assert json.loads(json.dumps(wire)) == wire
    assert wire["created_at"] == "2026-01-01T00:00:00+00:00"
    assert wire["networks"] == [{"uuid": "n1"}] == wire["requested_networks"]
    assert wire["flavor"]["vcpus"] == 1
    assert wire["weird"] == [1.5, "10.0.0.1"]
    assert instance_to_wire({"id": "i2", "requested_networks": []})["networks"] == []


def test_fingerprints_match_ssh_keygen():
    # ssh-keygen -l -E md5 of the same keys
    assert fingerprint(ED25519) == "6c:ec:00:16:6b:e7:ae:92:05:0b:f9:72:b4:6d:c9:25"
    assert fingerprint(RSA) == "c6:60:ac:ab:4c:ae:4b:80:eb:77:13:ee:b0:3c:88:82"


@pytest.mark.parametrize(
    "key",
    [
        "",
        "ssh-ed25519",
        "ssh-foo AAAA",
        "ssh-ed25519 !!!notbase64",
        "ssh-rsa AAAAC3NzaC1lZDI1NTE5AAAAIAHZTYmcRMbOdlfW28kJRw55czoEwIcPgbjgmkKSCqyG",  # blob says ed25519
    ],
)
def test_invalid_public_keys_are_400(key):
    with pytest.raises(exceptions.BadRequest):
        fingerprint(key)


def _row(vm_state, task_state=None, host="h1"):
    return {"id": "i1", "vm_state": vm_state, "task_state": task_state, "host": host}


def _guard(key, row):
    op = POWER_ACTIONS[key]
    check_state(row, op.name, op.vm_states, op.task_states)


@pytest.mark.parametrize(
    ("key", "row", "message"),
    [
        ("os-stop", _row("stopped"), "Cannot 'stop' instance i1 while it is in vm_state stopped"),
        ("os-stop", _row("active", "rebooting"), "Cannot 'stop' instance i1 while it is in task_state rebooting"),
        ("os-start", _row("active"), "Cannot 'start' instance i1 while it is in vm_state active"),
        ("reboot-SOFT", _row("stopped"), "Cannot 'reboot' instance i1 while it is in vm_state stopped"),
        ("reboot-HARD", _row("building", "scheduling"), "vm_state building"),
        ("os-stop", _row("error", host=None), "has not been placed on a host"),
    ],
)
def test_power_guards_are_409_with_nova_messages(key, row, message):
    with pytest.raises(exceptions.Conflict) as e:
        _guard(key, row)
    assert e.value.code == 409
    assert message in e.value.message


@pytest.mark.parametrize(
    ("key", "row"),
    [
        ("os-stop", _row("active")),
        ("os-stop", _row("error")),
        ("os-start", _row("stopped")),
        ("reboot-SOFT", _row("active")),
        ("reboot-HARD", _row("active", "rebooting")),
        ("reboot-HARD", _row("stopped")),
    ],
)
def test_power_guards_allow(key, row):
    _guard(key, row)


def test_service_state():
    assert service_state(5, 60) == "up"
    assert service_state(61, 60) == "down"
    assert service_state(None, 60) == "down"
    assert service_state(1, 60, forced_down=True) == "down"


def test_manage_parses_the_harness_command_line():
    args = _parser().parse_args(
        ["--config-file", "/etc/s.conf", "bootstrap", "--admin-password", "pw", "--network-name", "private",
         "--subnet-cidr", "10.99.0.0/24", "--image-name", "tiny", "--image-file", "/tmp/x.qcow2"]
    )  # fmt: skip
    assert args.config_file == ["/etc/s.conf"]
    assert (args.command, args.admin_password, args.network_name, args.subnet_cidr) == (
        "bootstrap", "pw", "private", "10.99.0.0/24",
    )  # fmt: skip
    assert str(args.image_file) == "/tmp/x.qcow2"
    assert _parser().parse_args(["db", "sync"]).db_command == "sync"
    with pytest.raises(SystemExit):
        _parser().parse_args(["bootstrap"])  # --admin-password is required
