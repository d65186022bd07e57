"""The validators of values that reach nftables and dnsmasq (``common.netvalues``): exact ASCII, normalised."""

import pytest

from common import netvalues
from common.exceptions import BadRequest

# Digits and letters that Python's int(), str.isdigit() or str.isalnum() take, and line breaks that re's "$"
# lets through: none may pass.
HOSTILE = ["６", "٦", "𝟔", "6\n", "\n6", " 6", "6 ", "tcp\n", "ｔｃｐ", "t\x00cp", "tcp;", "6\u2028"]


@pytest.mark.parametrize(
    ("given", "stored"),
    [("tcp", "tcp"), ("TCP", "tcp"), ("Udp", "udp"), ("icmp", "icmp"), ("ipv6-icmp", "ipv6-icmp"),
     ("6", "6"), ("006", "6"), (17, "17"), ("255", "255"), ("any", None), ("0", None), (0, None), (None, None)],
)  # fmt: skip
def test_protocol_names_and_ascii_numbers_are_normalised(given, stored):
    assert netvalues.protocol(given) == stored


@pytest.mark.parametrize("value", [*HOSTILE, "256", "-1", "1e2", "0x06", "", "tcp6", 256, -1, True, 6.0, [6]])
def test_protocol_refuses_everything_else(value):
    with pytest.raises(netvalues.InvalidInput) as e:
        netvalues.protocol(value)
    assert isinstance(e.value, BadRequest) and e.value.field == "protocol"
    assert e.value.message.isascii() and "\n" not in e.value.message


def test_a_refused_value_is_quoted_escaped_and_cut():
    with pytest.raises(netvalues.InvalidInput) as e:
        netvalues.protocol("６")
    assert "'\\uff16'" in e.value.message
    with pytest.raises(netvalues.InvalidInput) as e:
        netvalues.dns_domain("a" * 10_000)
    assert len(e.value.message) < 200 and "..." in e.value.message


def test_port_ranges_follow_the_protocol():
    assert netvalues.port_range("tcp", 22, None) == (22, 22)
    assert netvalues.port_range("6", 1, 65535) == (1, 65535)
    assert netvalues.port_range("sctp", 5, 9) == (5, 9)
    assert netvalues.port_range("icmp", 8, 0) == (8, 0)
    assert netvalues.port_range("icmp", 3, None) == (3, None)
    assert netvalues.port_range(None, None, None) == (None, None)
    for proto, lo, hi, field in [
        ("tcp", 10, 9, "port_range_min"), ("tcp", 65536, None, "port_range_min"), ("udp", None, 5, "port_range_max"),
        ("tcp", -1, 2, "port_range_min"), ("tcp", True, 2, "port_range_min"), ("tcp", "22", 22, "port_range_min"),
        ("icmp", 256, None, "port_range_min"), ("icmp", None, 0, "port_range_max"), ("gre", 1, 2, "port_range_min"),
        (None, 80, 80, "port_range_min"),
    ]:  # fmt: skip
        with pytest.raises(netvalues.InvalidInput) as e:
            netvalues.port_range(proto, lo, hi)
        assert e.value.field == field, (proto, lo, hi)


def test_remote_prefix_is_a_normalised_cidr_of_the_rules_ethertype():
    assert netvalues.cidr("10.1.2.3/8", 4) == "10.0.0.0/8"
    assert netvalues.cidr("192.0.2.7", 4) == "192.0.2.7/32"
    assert netvalues.cidr("2001:DB8::1/32", 6) == "2001:db8::/32"
    # ipaddress takes an IPv6 scope id with any text in it, newlines included.
    for bad, version in [("fe80::1%eth0/64", 6), ("fe80::1%x\ny", 6), ("10.0.0.0/２４", 4), ("10.0.0.0/24\n", 4),
                         ("10.0.0.0/33", 4), ("::/0", 4), ("10.0.0.0/8", 6), ("", 4), (167772160, 4)]:  # fmt: skip
        with pytest.raises(netvalues.InvalidInput):
            netvalues.cidr(bad, version)


def test_a_whole_rule_is_checked_together():
    rule = netvalues.security_group_rule(
        {
            "direction": "ingress",
            "protocol": "TCP",
            "port_range_min": 80,
            "remote_ip_prefix": "10.9.9.9/24",
            "description": "kept",
        }  # fmt: skip
    )
    assert rule == {"direction": "ingress", "ethertype": "IPv4", "protocol": "tcp", "port_range_min": 80,
                    "port_range_max": 80, "remote_ip_prefix": "10.9.9.0/24", "remote_group_id": None,
                    "description": "kept"}  # fmt: skip
    for bad, field in [
        ({"direction": "in"}, "direction"),
        ({"direction": "ingress", "ethertype": "ipv4"}, "ethertype"),
        ({"direction": "ingress", "protocol": "ipv6-icmp"}, "protocol"),
        ({"direction": "ingress", "remote_ip_prefix": "::/0"}, "remote_ip_prefix"),
        ({"direction": "ingress", "remote_ip_prefix": "10.0.0.0/8", "remote_group_id": "x"}, "remote_group_id"),
        ({"direction": "ingress", "remote_group_id": "not-a-uuid\n"}, "remote_group_id"),
    ]:
        with pytest.raises(netvalues.InvalidInput) as e:
            netvalues.security_group_rule(bad)
        assert e.value.field == field


def test_dns_domain_is_an_rfc1123_name_in_ascii():
    for good in ["stratus.local", "Example.ORG.", "a", "x-1.y2.example", ("a" * 63 + ".") * 3 + "b" * 61, ""]:
        assert netvalues.dns_domain(good) == good
    for bad in ["a\nb", "example.org\n", "bad\ndhcp-range=1", "exa mple.org", "-a.org", "a-.org", "a..b", ".",
                "10.0.0.1", "example.123", "_srv.example", "a" * 64 + ".org", "é.org", "ｅxample.org",
                ("a" * 63 + ".") * 4, None, 5]:  # fmt: skip
        with pytest.raises(netvalues.InvalidInput):
            netvalues.dns_domain(bad)
    with pytest.raises(netvalues.InvalidInput):
        netvalues.dns_domain("", allow_empty=False)


def test_dns_label_mac_interface_and_id():
    assert netvalues.dns_label("web-1") == "web-1" and netvalues.dns_label("") == ""
    for bad in ["web.example", "web_1", "-web", "web-", "a" * 64, "web\n", "wéb", " web"]:
        with pytest.raises(netvalues.InvalidInput):
            netvalues.dns_label(bad)
    assert netvalues.mac_address("FA-16-3E-00-00-0A") == "fa:16:3e:00:00:0a"
    for bad in ["01:00:5e:00:00:01", "00:00:00:00:00:00", "fa:16:3e:00:00:0a\n", "fa:16:3e:00:00:０a", "fa163e00000a"]:
        with pytest.raises(netvalues.InvalidInput):
            netvalues.mac_address(bad)
    assert netvalues.interface_name("brq0123abcd-00") == "brq0123abcd-00"
    for bad in ["", "a" * 16, "tap x", 'tap"', "tap\n", "-tap", "tâp"]:
        with pytest.raises(netvalues.InvalidInput):
            netvalues.interface_name(bad)
    assert netvalues.resource_id("0123abcd-0000-4000-8000-000000000000")
    for bad in ["0123ABCD-0000-4000-8000-000000000000", "0123abcd000040008000000000000000", "x", ""]:
        with pytest.raises(netvalues.InvalidInput):
            netvalues.resource_id(bad)


def test_addresses_are_canonical_ascii():
    assert netvalues.ipv4_address("192.0.2.1") == "192.0.2.1"
    for bad in ["192.0.2.01", "192.0.2.1\n", "１92.0.2.1", "::1", "fe80::1%lo", 3232235521, "192.0.2.256"]:
        with pytest.raises(netvalues.InvalidInput):
            netvalues.ipv4_address(bad)
    assert netvalues.mtu(1500) == 1500
    for bad in [67, 9001, "1500", True]:
        with pytest.raises(netvalues.InvalidInput):
            netvalues.mtu(bad)
