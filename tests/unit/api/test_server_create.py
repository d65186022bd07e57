"""Server create validation: the schema's messages name the field, and parse_boot_request's checks."""

import pytest

from common import exceptions
from common.objects import request_spec_from_instance
from services.api.compute import schemas
from services.api.compute.servers import parse_boot_request, sanitize_hostname
from services.api.validation import validate

IMG = "0b2c1b6e-4bb1-4c69-bd0d-7f2a3e9a3c11"


def _body(**server):
    return {"server": {"name": "vm", "flavorRef": "1", "imageRef": IMG, **server}}


def _bad(body, needle):
    with pytest.raises(exceptions.BadRequest) as e:
        validate(schemas.SERVER_CREATE, body)
        parse_boot_request(body, max_servers=10)
    assert needle in e.value.message, e.value.message
    return e.value.message


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ([], "body"),
        ({"server": {"flavorRef": "1"}}, "'name' is a required property"),
        ({"server": {"name": "x"}}, "flavorRef"),
        (_body(name=5), "server/name"),
        (_body(name=""), "server/name"),
        (_body(name=" padded "), "whitespace"),
        (_body(networks="some"), "server/networks"),
        (_body(networks=[{"fixed_ip": "10.0.0.1"}]), "server/networks"),
        (_body(networks=[{"uuid": "n", "bogus": 1}]), "server/networks"),
        (_body(metadata={"k": 1}), "server/metadata/k"),
        (_body(metadata={"k": "v" * 256}), "server/metadata/k"),
        (_body(min_count="two"), "server/min_count"),
        (_body(personality=[]), "personality"),
        (_body(config_drive="yes"), "config_drive"),
        (_body(config_drive=1), "config_drive"),
        (_body(security_groups=[{"name": "web"}]), "security_groups"),
        (_body(block_device_mapping_v2=[{"source_type": "volume", "uuid": "v"}]), "block_device_mapping_v2"),
        (_body(user_data="@@@not base64@@@"), "user_data"),
        (_body(min_count=0), "server/min_count"),
        (_body(min_count="0"), "at least 1"),
        (_body(min_count=3, max_count=2), "min_count (3)"),
        (_body(max_count=11), "limit of 10"),
        (_body(imageRef=""), "imageRef is required"),
        (_body(networks=[{"uuid": "n", "fixed_ip": "300.1.1.1"}]), "Invalid fixed IP"),
        (_body(networks=[{"uuid": "n", "fixed_ip": "10.0.0.9"}], max_count=2), "more than one server"),
        (_body(networks=[{"port": "p"}], max_count=2), "single configured port"),
        (_body(availability_zone="nova:host1"), "Forcing a host"),
        (_body(accessIPv4="nope"), "accessIPv4"),
    ],
)
def test_bad_create_bodies_are_400_naming_the_field(body, needle):
    _bad(body, needle)


def test_minimal_body_defaults():
    body = _body()
    validate(schemas.SERVER_CREATE, body)
    boot = parse_boot_request(body, max_servers=10)
    assert (boot.name, boot.flavor_id, boot.image_id) == ("vm", "1", IMG)
    assert boot.networks == "auto"
    assert (boot.min_count, boot.max_count) == (1, 1)
    assert boot.metadata == {}


@pytest.mark.parametrize(
    ("value", "wanted"),
    [(True, True), ("True", True), ("true", True), (False, False), ("false", False), ("", False), (None, False)],
)
def test_config_drive_takes_novas_boolean_spellings(value, wanted):
    body = _body(config_drive=value)
    validate(schemas.SERVER_CREATE, body)
    assert parse_boot_request(body, max_servers=10).config_drive is wanted
    assert parse_boot_request(_body(), max_servers=10).config_drive is False


def test_empty_network_list_means_auto_as_before_2_37():
    assert parse_boot_request(_body(networks=[]), max_servers=10).networks == "auto"
    assert parse_boot_request(_body(networks="none"), max_servers=10).networks == "none"


def test_refs_may_be_urls_and_counts_strings():
    body = _body(flavorRef="http://h/compute/v2.1/flavors/42", imageRef=f"http://h/image/v2/images/{IMG}",
                 min_count="2", max_count="3")  # fmt: skip
    validate(schemas.SERVER_CREATE, body)
    boot = parse_boot_request(body, max_servers=10)
    assert (boot.flavor_id, boot.image_id, boot.min_count, boot.max_count) == ("42", IMG, 2, 3)


def test_openstackclient_body_with_image_bdm_is_accepted():
    bdm = {"uuid": IMG, "boot_index": 0, "source_type": "image", "destination_type": "local",
           "delete_on_termination": True}  # fmt: skip
    body = _body(block_device_mapping_v2=[bdm], networks=[{"uuid": "n1"}], min_count=1, max_count=1)
    validate(schemas.SERVER_CREATE, body)
    assert parse_boot_request(body, max_servers=10).image_id == IMG
    body = {"server": {"name": "vm", "flavorRef": "1", "imageRef": "", "block_device_mapping_v2": [bdm]}}
    assert parse_boot_request(body, max_servers=10).image_id == IMG


@pytest.mark.parametrize(
    ("name", "hostname"),
    [
        ("web", "web"),
        ("My Server_01", "my-server-01"),
        ("ünïcode!name", "ncodename"),
        ("-.trim.-", "trim"),
        ("%%%", "server-x"),
        ("a" * 80, "a" * 63),
    ],
)
def test_hostname_is_sanitized(name, hostname):
    assert sanitize_hostname(name, "server-x") == hostname


def test_request_spec_carries_what_the_scheduler_needs():
    row = {"id": "i1", "project_id": "p1", "user_id": "u1", "availability_zone": None,
           "flavor": {"id": "1", "vcpus": 1, "ram_mb": 128, "disk_gb": 1, "extra_specs": {}},
           "image": {"id": IMG, "location": "file:///x", "checksum": "c", "disk_format": "qcow2", "size": 1,
                     "properties": {}},
           "requested_networks": [{"uuid": "n1"}]}  # fmt: skip
    ports = [{"id": "port-1", "network_id": "n1", "mac_address": "fa:16:3e:00:00:01", "bridge": "brqn1"}]
    spec = request_spec_from_instance(row, ports)
    assert spec["instance_id"] == "i1"
    assert spec["networks"] == [{"uuid": "n1"}] and spec["ports"] == ports
    assert (spec["attempt"], spec["excluded_hosts"], spec["failures"]) == (1, [], [])
    assert spec["flavor"]["ram_mb"] == 128 and spec["image"]["location"] == "file:///x"
