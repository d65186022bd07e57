"""IPAM arithmetic: subnet plans, pools, gateways, next free address, requested addresses, MACs, bridges."""

from __future__ import annotations

import random
from ipaddress import IPv4Address, IPv4Network, ip_network

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from common import exceptions
from services.network import ipam
from services.network.ipam import Pool


def A(s: str) -> IPv4Address:
    return IPv4Address(s)


def pools(*ranges: tuple[str, str]) -> list[Pool]:
    return [Pool(A(a), A(b)) for a, b in ranges]


# ----- plans ---------------------------------------------------------------------------------------------------


def test_default_plan_gateway_is_first_host_and_pool_is_the_rest():
    plan = ipam.plan_subnet("10.0.0.0/24")
    assert plan.gateway_ip == A("10.0.0.1")
    assert plan.pools_json() == [{"start": "10.0.0.2", "end": "10.0.0.254"}]
    assert ipam.pool_size(plan.allocation_pools) == 253


def test_gateway_in_the_middle_splits_the_pool():
    plan = ipam.plan_subnet("192.168.1.0/28", gateway_ip="192.168.1.7")
    assert plan.pools_json() == [
        {"start": "192.168.1.1", "end": "192.168.1.6"},
        {"start": "192.168.1.8", "end": "192.168.1.14"},
    ]


def test_gateway_on_last_host_leaves_one_pool():
    plan = ipam.plan_subnet("192.168.1.0/29", gateway_ip="192.168.1.6")
    assert plan.pools_json() == [{"start": "192.168.1.1", "end": "192.168.1.5"}]


def test_no_gateway_means_every_host_is_allocatable():
    plan = ipam.plan_subnet("10.1.0.0/30", gateway_ip=None)
    assert plan.gateway_ip is None
    assert plan.pools_json() == [{"start": "10.1.0.1", "end": "10.1.0.2"}]


def test_smallest_subnet_has_one_address_after_the_gateway():
    plan = ipam.plan_subnet("10.1.0.0/30")
    assert plan.pools_json() == [{"start": "10.1.0.2", "end": "10.1.0.2"}]


@pytest.mark.parametrize(
    ("cidr", "fragment"),
    [
        ("10.0.0.1/24", "use 10.0.0.0/24"),
        ("10.0.0.0/31", "prefix length"),
        ("10.0.0.0/32", "prefix length"),
        ("10.0.0.0/7", "prefix length"),
        ("fd00::/64", "IPv4"),
        ("not-a-cidr", "not a valid CIDR"),
        ("10.0.0.0/33", "not a valid CIDR"),
    ],
)
def test_bad_cidrs_are_rejected_with_a_reason(cidr, fragment):
    with pytest.raises(exceptions.BadRequest, match="cidr") as e:
        ipam.plan_subnet(cidr)
    assert fragment in e.value.message


def test_ipv6_version_is_rejected():
    with pytest.raises(exceptions.BadRequest, match="ip_version"):
        ipam.plan_subnet("10.0.0.0/24", ip_version=6)


@pytest.mark.parametrize(
    ("gateway", "fragment"),
    [
        ("10.0.1.1", "is not in subnet"),
        ("10.0.0.0", "network or broadcast"),
        ("10.0.0.255", "network or broadcast"),
        ("banana", "not a valid IP"),
    ],
)
def test_bad_gateways(gateway, fragment):
    with pytest.raises(exceptions.BadRequest) as e:
        ipam.plan_subnet("10.0.0.0/24", gateway_ip=gateway)
    assert fragment in e.value.message


def test_explicit_pools_are_sorted_and_kept():
    plan = ipam.plan_subnet(
        "10.0.0.0/24",
        allocation_pools=[{"start": "10.0.0.100", "end": "10.0.0.200"}, {"start": "10.0.0.10", "end": "10.0.0.20"}],
    )
    assert plan.pools_json() == [
        {"start": "10.0.0.10", "end": "10.0.0.20"},
        {"start": "10.0.0.100", "end": "10.0.0.200"},
    ]


@pytest.mark.parametrize(
    ("pool_list", "fragment"),
    [
        ([{"start": "10.0.0.20", "end": "10.0.0.10"}], "start is after end"),
        ([{"start": "10.0.0.0", "end": "10.0.0.10"}], "spans beyond"),
        ([{"start": "10.0.0.250", "end": "10.0.0.255"}], "spans beyond"),
        ([{"start": "10.0.1.2", "end": "10.0.1.10"}], "spans beyond"),
        ([{"start": "10.0.0.2", "end": "10.0.0.50"}, {"start": "10.0.0.50", "end": "10.0.0.60"}], "overlapping"),
        ([{"start": "10.0.0.1", "end": "10.0.0.50"}], "conflicts with allocation pool"),
        ([{"start": "10.0.0.2"}], "exactly 'start' and 'end'"),
        ("10.0.0.2-10.0.0.9", "is not a list"),
    ],
)
def test_bad_pools(pool_list, fragment):
    with pytest.raises(exceptions.BadRequest) as e:
        ipam.plan_subnet("10.0.0.0/24", allocation_pools=pool_list)
    assert fragment in e.value.message


def test_nameservers_and_routes_are_validated_and_normalised():
    plan = ipam.plan_subnet(
        "10.0.0.0/24",
        dns_nameservers=["8.8.8.8", "1.1.1.1"],
        host_routes=[{"destination": "192.168.0.0/16", "nexthop": "10.0.0.254"}],
    )
    assert plan.dns_nameservers == ("8.8.8.8", "1.1.1.1")
    assert plan.host_routes == ({"destination": "192.168.0.0/16", "nexthop": "10.0.0.254"},)
    with pytest.raises(exceptions.BadRequest, match="duplicate"):
        ipam.plan_subnet("10.0.0.0/24", dns_nameservers=["8.8.8.8", "8.8.8.8"])
    with pytest.raises(exceptions.BadRequest, match="limit"):
        ipam.plan_subnet("10.0.0.0/24", dns_nameservers=[f"8.8.8.{i}" for i in range(6)])
    with pytest.raises(exceptions.BadRequest, match="destination"):
        ipam.plan_subnet("10.0.0.0/24", host_routes=[{"destination": "10.0.0.1/8", "nexthop": "10.0.0.254"}])


# ----- choosing addresses --------------------------------------------------------------------------------------


def _subnet_kwargs(cidr="10.0.0.0/24", gateway="10.0.0.1", pool_list=(("10.0.0.10", "10.0.0.20"),)):
    return {"subnet_id": "sub-1", "cidr": ip_network(cidr), "gateway_ip": A(gateway), "pools": pools(*pool_list)}


def test_requested_ip_inside_a_pool_is_accepted():
    assert ipam.check_requested_ip("10.0.0.15", **_subnet_kwargs()) == A("10.0.0.15")


@pytest.mark.parametrize(
    ("ip", "exc", "fragment"),
    [
        ("10.0.1.15", exceptions.BadRequest, "not a valid IP for subnet sub-1"),
        ("10.0.0.1", exceptions.Conflict, "is the gateway"),
        ("10.0.0.5", exceptions.BadRequest, "not in an allocation pool"),
        ("10.0.0.256", exceptions.BadRequest, "not a valid IP address"),
        ("fd00::1", exceptions.BadRequest, "not an IPv4"),
    ],
)
def test_bad_requested_ips(ip, exc, fragment):
    with pytest.raises(exc) as e:
        ipam.check_requested_ip(ip, **_subnet_kwargs())
    assert fragment in e.value.message


def test_subnet_facts_reads_rows_as_asyncpg_returns_them():
    from ipaddress import IPv4Interface

    row = {
        "cidr": IPv4Network("10.0.0.0/24"),
        "gateway_ip": IPv4Interface("10.0.0.1/32"),
        "allocation_pools": [{"start": "10.0.0.2", "end": "10.0.0.254"}],
    }
    cidr, gw, p = ipam.subnet_facts(row)
    assert (cidr, gw, p) == (IPv4Network("10.0.0.0/24"), A("10.0.0.1"), pools(("10.0.0.2", "10.0.0.254")))


# ----- MACs and bridges ----------------------------------------------------------------------------------------


def test_random_mac_keeps_the_prefix():
    rng = random.Random(7)
    macs = {ipam.random_mac("fa:16:3e:00:00:00", rng) for _ in range(200)}
    assert all(m.startswith("fa:16:3e:") and len(m) == 17 for m in macs)
    assert len(macs) > 190  # random, not a counter
    assert ipam.random_mac("02:AB:cd:ff:ff:ff", rng).startswith("02:ab:cd:")


@pytest.mark.parametrize("mac", ["01:00:5e:00:00:01", "00:00:00:00:00:00", "fa:16:3e:00:00", "zz:16:3e:00:00:00", 5])
def test_bad_macs(mac):
    with pytest.raises(exceptions.BadRequest, match="mac_address"):
        ipam.parse_mac(mac)


def test_parse_mac_normalises():
    assert ipam.parse_mac("FA-16-3E-0A-0B-0C") == "fa:16:3e:0a:0b:0c"


def test_bridge_name_fits_ifnamsiz():
    nid = "6c1d4b4e-ab12-4cde-8f00-112233445566"
    assert ipam.bridge_name("brq", nid) == "brq6c1d4b4e-ab"
    assert len(ipam.bridge_name("brq", nid)) <= 15
    assert len(ipam.bridge_name("stratus-", nid)) == 15
    with pytest.raises(ValueError, match="bridge_prefix"):
        ipam.bridge_name("much-too-long-", nid)


# ----- properties ----------------------------------------------------------------------------------------------


@st.composite
def subnet_and_usage(draw):
    prefix = draw(st.integers(min_value=22, max_value=30))
    base = draw(st.integers(min_value=0, max_value=2**32 - 1)) >> (32 - prefix) << (32 - prefix)
    cidr = IPv4Network((base, prefix))
    hosts = list(range(int(cidr.network_address) + 1, int(cidr.broadcast_address)))
    gateway = draw(st.one_of(st.none(), st.sampled_from(hosts)))
    used = draw(st.sets(st.sampled_from(hosts), max_size=len(hosts)))
    limit = draw(st.integers(min_value=1, max_value=20))
    return cidr, gateway, used, limit


@settings(max_examples=200, deadline=None)
@given(subnet_and_usage())
def test_default_pools_cover_every_host_but_the_gateway(case):
    cidr, gateway, _, _ = case
    plan = ipam.plan_subnet(str(cidr), gateway_ip=None if gateway is None else str(IPv4Address(gateway)))
    hosts = cidr.num_addresses - 2
    assert ipam.pool_size(plan.allocation_pools) == hosts - (1 if plan.gateway_ip is not None else 0)
    # pools are disjoint and ordered
    for a, b in zip(plan.allocation_pools, plan.allocation_pools[1:], strict=False):
        assert a.end < b.start
