"""Address and MAC allocation against a real PostgreSQL: concurrency, exhaustion, requested addresses."""

from __future__ import annotations

import asyncio
import random
from ipaddress import IPv4Address

import asyncpg
import pytest
from hypothesis import HealthCheck, given, settings

from common import exceptions
from common.db import networks as db_networks
from common.db.pool import Database
from services.network import ipam
from tests.unit.network.test_ipam import subnet_and_usage

pytestmark = pytest.mark.functional

BASE_MAC = "fa:16:3e:00:00:00"


async def _net(db: Database, cidr: str = "10.0.0.0/24", name: str = "net", **kw):
    return await db.run(lambda conn: db_networks.create_network_with_subnet(conn, "proj", name, cidr, False, **kw))


async def _port(db: Database, network_id: str, **kw):
    made = await db.run(
        lambda conn: db_networks.create_port(conn, network_id=network_id, project_id="proj", base_mac=BASE_MAC, **kw)
    )
    return made.port


async def test_100_concurrent_ports_never_share_an_ip_or_mac(db: Database):
    net, subnet = await _net(db)
    ports = await asyncio.gather(*(_port(db, net["id"], name=f"p{i}") for i in range(100)))
    assert len({p["id"] for p in ports}) == 100
    async with db.transaction() as conn:
        stats = await conn.fetchrow(
            "SELECT count(*) AS n, count(DISTINCT ip_address) AS ips, count(DISTINCT port_id) AS ports,"
            " host(min(ip_address)) AS lo, host(max(ip_address)) AS hi FROM ip_allocations WHERE subnet_id = $1",
            subnet["id"],
        )
        macs = await conn.fetchrow(
            "SELECT count(*) AS n, count(DISTINCT mac_address) AS distinct_macs FROM ports WHERE network_id = $1",
            net["id"],
        )
        prefixes = await conn.fetchval(
            "SELECT count(*) FROM ports WHERE network_id = $1 AND mac_address::text NOT LIKE 'fa:16:3e:%'", net["id"]
        )
    assert (stats["n"], stats["ips"], stats["ports"]) == (100, 100, 100)
    # lowest-first: exactly the first 100 pool addresses, the gateway (.1) never
    assert (stats["lo"], stats["hi"]) == ("10.0.0.2", "10.0.0.101")
    assert (macs["n"], macs["distinct_macs"]) == (100, 100)
    assert prefixes == 0


async def test_mac_clashes_are_retried(db: Database, monkeypatch: pytest.MonkeyPatch):
    """A tiny MAC space forces clashes on the UNIQUE constraint; every port still gets a distinct MAC."""
    net, _ = await _net(db)
    rng = random.Random(1234)
    drawn = []

    def few_macs(base_mac: str, rng_arg=None) -> str:
        n = rng.randrange(400)  # 400 possible MACs for 100 ports: many collisions, none fatal
        drawn.append(n)
        return f"fa:16:3e:00:{n >> 8:02x}:{n & 0xFF:02x}"

    monkeypatch.setattr(ipam, "random_mac", few_macs)
    ports = await asyncio.gather(*(_port(db, net["id"]) for _ in range(100)))
    assert len({str(p["mac_address"]) for p in ports}) == 100
    assert len(drawn) > 100  # some tries did clash and were retried


async def test_exhausted_subnet_is_a_409_naming_the_subnet(db: Database):
    net, subnet = await _net(db, "10.9.0.0/29")  # 6 hosts - gateway = 5 addresses
    got = await asyncio.gather(*(_port(db, net["id"]) for _ in range(5)))
    assert len(got) == 5
    with pytest.raises(exceptions.IpAddressExhausted) as e:
        await _port(db, net["id"])
    assert e.value.code == 409
    assert subnet["id"] in e.value.message and "10.9.0.0/29" in e.value.message
    # the failed creation left no port behind
    async with db.transaction() as conn:
        assert await conn.fetchval("SELECT count(*) FROM ports WHERE network_id = $1", net["id"]) == 5


async def test_concurrent_creations_past_exhaustion_fail_cleanly(db: Database):
    net, _ = await _net(db, "10.9.1.0/28")  # 13 addresses
    results = await asyncio.gather(*(_port(db, net["id"]) for _ in range(20)), return_exceptions=True)
    ok = [r for r in results if not isinstance(r, BaseException)]
    failed = [r for r in results if isinstance(r, BaseException)]
    assert len(ok) == 13
    assert len(failed) == 7 and all(isinstance(f, exceptions.IpAddressExhausted) for f in failed)


async def test_freed_addresses_are_reused(db: Database):
    net, _ = await _net(db, "10.9.2.0/29")
    ports = [await _port(db, net["id"]) for _ in range(5)]
    await db.run(lambda conn: db_networks.delete_port(conn, ports[2]["id"]))
    again = await _port(db, net["id"])
    ips = await db.run(lambda conn: db_networks.fixed_ips_for(conn, [again["id"]]))
    assert ips[again["id"]] == [{"subnet_id": ips[again["id"]][0]["subnet_id"], "ip_address": "10.9.2.4"}]


async def test_requested_addresses(db: Database):
    net, subnet = await _net(db, "10.9.3.0/24")
    p = await _port(db, net["id"], fixed_ips=[{"ip_address": "10.9.3.50"}])
    ips = await db.run(lambda conn: db_networks.fixed_ips_for(conn, [p["id"]]))
    assert ips[p["id"]] == [{"subnet_id": subnet["id"], "ip_address": "10.9.3.50"}]
    with pytest.raises(exceptions.Conflict, match="10.9.3.50 is in use"):
        await _port(db, net["id"], fixed_ips=[{"subnet_id": subnet["id"], "ip_address": "10.9.3.50"}])
    with pytest.raises(exceptions.Conflict, match="gateway"):
        await _port(db, net["id"], fixed_ips=[{"ip_address": "10.9.3.1"}])
    with pytest.raises(exceptions.BadRequest, match="not in any subnet"):
        await _port(db, net["id"], fixed_ips=[{"ip_address": "10.9.4.5"}])
    with pytest.raises(exceptions.BadRequest, match="not a subnet of network"):
        await _port(db, net["id"], fixed_ips=[{"subnet_id": "nope"}])
    none = await _port(db, net["id"], fixed_ips=[])
    assert (await db.run(lambda conn: db_networks.fixed_ips_for(conn, [none["id"]])))[none["id"]] == []
    # a requested MAC that is taken is a conflict, not a retry
    with pytest.raises(exceptions.Conflict, match="mac address"):
        await _port(db, net["id"], mac_address=str(p["mac_address"]))


async def test_a_port_on_a_full_first_subnet_takes_the_next(db: Database):
    net, first = await _net(db, "10.9.5.0/30")  # one address
    second = await db.run(
        lambda conn: db_networks.create_subnet(
            conn, network_id=net["id"], project_id="proj", plan=ipam.plan_subnet("10.9.6.0/24")
        )
    )
    a = await _port(db, net["id"])
    b = await _port(db, net["id"])
    ips = await db.run(lambda conn: db_networks.fixed_ips_for(conn, [a["id"], b["id"]]))
    assert ips[a["id"]][0]["subnet_id"] == first["id"]
    assert ips[b["id"]] == [{"subnet_id": second["id"], "ip_address": "10.9.6.2"}]


async def test_a_big_pool_is_searched_from_a_random_window_then_whole(db: Database, monkeypatch: pytest.MonkeyPatch):
    """A /20 (4,093 pool addresses): allocation looks at ``SEARCH_WINDOW`` addresses from a random offset and takes
    the lowest free one there; when ``SEARCH_TRIES`` such windows are full it takes the whole pool's lowest free
    address."""
    net, subnet = await _net(db, "10.50.0.0/20", name="big")
    offsets: list[int] = []
    randrange = random.randrange

    def offset(n: int) -> int:  # the window's offset is 1000; MACs stay random
        if n == 4093 - ipam.SEARCH_WINDOW + 1:
            offsets.append(n)
            return 1000
        return randrange(n)

    monkeypatch.setattr(ipam.random, "randrange", offset)
    first = await _port(db, net["id"])  # window 10.50.0.2 + 1000 = 10.50.3.234 ..
    assert len(offsets) == ipam.SEARCH_TRIES  # drawn up front; only the first window was searched
    ips = await db.run(lambda conn: db_networks.fixed_ips_for(conn, [first["id"]]))
    assert ips[first["id"]][0]["ip_address"] == "10.50.3.234"
    # Fill that window (the first port holds its lowest address), then allocate again: every window (all at the
    # same offset) has nothing, the whole pool's lowest free address is the answer.
    await db.run(
        lambda conn: conn.execute(
            "INSERT INTO ip_allocations (subnet_id, ip_address, port_id, network_id)"
            " SELECT $1, '10.50.3.235'::inet + i, $2, $3 FROM generate_series(0, $4 - 2) AS i",
            subnet["id"],
            first["id"],
            net["id"],
            ipam.SEARCH_WINDOW,
        )  # fmt: skip
    )
    again = await _port(db, net["id"])
    ips = await db.run(lambda conn: db_networks.fixed_ips_for(conn, [again["id"]]))
    assert ips[again["id"]][0]["ip_address"] == "10.50.0.2"


async def test_overlapping_subnets_on_one_network_are_refused(db: Database):
    net, _ = await _net(db, "10.9.7.0/24")
    with pytest.raises(exceptions.BadRequest, match="overlaps"):
        await db.run(
            lambda conn: db_networks.create_subnet(
                conn, network_id=net["id"], project_id="proj", plan=ipam.plan_subnet("10.9.7.128/25")
            )
        )


async def test_delete_network_with_ports_is_a_409_naming_the_devices(db: Database):
    net, _ = await _net(db)
    await _port(db, net["id"], device_id="vm-1", device_owner="compute:nova")
    await _port(db, net["id"], device_id="vm-2", device_owner="compute:nova")
    await _port(db, net["id"])
    with pytest.raises(exceptions.Conflict) as e:
        await db.run(lambda conn: db_networks.delete_network(conn, net["id"]))
    assert e.value.code == 409
    assert "are 3 ports in use" in e.value.message
    assert "vm-1" in e.value.message and "vm-2" in e.value.message and "by 2 devices" in e.value.message
    async with db.transaction() as conn:
        assert await db_networks.get_network(conn, net["id"]) is not None


async def test_delete_network_takes_its_subnets_and_network_owned_ports(db: Database):
    net, subnet = await _net(db)
    await _port(db, net["id"], device_owner="network:dhcp", device_id="dhcp-1")
    assert await db.run(lambda conn: db_networks.delete_network(conn, net["id"])) is True
    async with db.transaction() as conn:
        assert await db_networks.get_subnet(conn, subnet["id"]) is None
        assert await conn.fetchval("SELECT count(*) FROM ports") == 0
        assert await conn.fetchval("SELECT count(*) FROM ip_allocations") == 0
    assert await db.run(lambda conn: db_networks.delete_network(conn, net["id"])) is False


async def test_delete_subnet_in_use_is_a_409(db: Database):
    net, subnet = await _net(db)
    port = await _port(db, net["id"], device_id="vm-9")
    with pytest.raises(exceptions.Conflict, match=f"{subnet['id']}.*1 port has"):
        await db.run(lambda conn: db_networks.delete_subnet(conn, subnet["id"]))
    await db.run(lambda conn: db_networks.delete_port(conn, port["id"]))
    assert await db.run(lambda conn: db_networks.delete_subnet(conn, subnet["id"])) is True


async def test_create_network_with_subnet_is_idempotent(db: Database):
    results = await asyncio.gather(*(_net(db, "10.20.0.0/24", name="public") for _ in range(8)))
    assert len({n["id"] for n, _ in results}) == 1
    assert len({s["id"] for _, s in results}) == 1
    net, subnet = results[0]
    assert net["bridge"] == "brq" + net["id"][:11]
    assert str(subnet["cidr"]) == "10.20.0.0/24" and subnet["allocation_pools"] == [
        {"start": "10.20.0.2", "end": "10.20.0.254"}
    ]
    with pytest.raises(exceptions.Conflict, match="10.21.0.0/24"):
        await _net(db, "10.21.0.0/24", name="public")


async def test_update_port_fixed_ips_replaces_addresses(db: Database):
    net, subnet = await _net(db, "10.30.0.0/24")
    port = await _port(db, net["id"])  # 10.30.0.2
    await db.run(
        lambda conn: db_networks.update_port(
            conn, port["id"], {}, fixed_ips=[{"ip_address": "10.30.0.2"}, {"ip_address": "10.30.0.77"}]
        )
    )
    ips = await db.run(lambda conn: db_networks.fixed_ips_for(conn, [port["id"]]))
    assert [f["ip_address"] for f in ips[port["id"]]] == ["10.30.0.2", "10.30.0.77"]
    await db.run(lambda conn: db_networks.update_port(conn, port["id"], {}, fixed_ips=[{"subnet_id": subnet["id"]}]))
    ips = await db.run(lambda conn: db_networks.fixed_ips_for(conn, [port["id"]]))
    assert [f["ip_address"] for f in ips[port["id"]]] == ["10.30.0.2"]


# ----- the lowest free addresses, computed by PostgreSQL (ipam.lowest_free) -----------------------------------------


def _pools(*ranges: tuple[str, str]) -> list[ipam.Pool]:
    return [ipam.Pool(IPv4Address(a), IPv4Address(b)) for a, b in ranges]


async def _subnet_using(db: Database, cidr: str, name: str, used: list[str]) -> str:
    """A subnet whose first port holds the lowest pool address (.2) plus every address in ``used``."""
    net, subnet = await _net(db, cidr, name=name)
    port = await _port(db, net["id"])
    await db.run(
        lambda conn: conn.execute(
            "INSERT INTO ip_allocations (subnet_id, ip_address, port_id, network_id)"
            " SELECT $1, unnest($2::inet[]), $3, $4",
            subnet["id"],
            used,
            port["id"],
            net["id"],
        )  # fmt: skip
    )
    return subnet["id"]


async def _lowest(db: Database, subnet_id: str, pools: list[ipam.Pool], limit: int, **kw) -> list[str]:
    found = await db.run(lambda conn: ipam.lowest_free(conn, subnet_id, pools, limit, **kw))
    return [str(ip) for ip in found]


async def test_lowest_free_skips_used_addresses_in_order(db: Database):
    sid = await _subnet_using(db, "10.40.0.0/24", "lf-gaps", ["10.40.0.3", "10.40.0.5"])
    pools = _pools(("10.40.0.2", "10.40.0.10"))
    assert await _lowest(db, sid, pools, 3) == ["10.40.0.4", "10.40.0.6", "10.40.0.7"]


async def test_lowest_free_crosses_pools_in_order_and_honours_exclusions(db: Database):
    sid = await _subnet_using(db, "10.41.0.0/24", "lf-pools", [])
    pools = _pools(("10.41.0.200", "10.41.0.201"), ("10.41.0.2", "10.41.0.3"))
    got = await _lowest(db, sid, pools, 5, exclude=[IPv4Address("10.41.0.200")])
    assert got == ["10.41.0.3", "10.41.0.201"]


async def test_lowest_free_of_an_exhausted_pool_is_empty_and_ignores_addresses_outside(db: Database):
    sid = await _subnet_using(db, "10.42.0.0/24", "lf-full", ["10.42.0.3", "10.42.0.4", "10.42.0.99"])
    assert await _lowest(db, sid, _pools(("10.42.0.2", "10.42.0.4")), 1) == []
    assert await _lowest(db, sid, _pools(("10.42.0.98", "10.42.0.100")), 5) == ["10.42.0.98", "10.42.0.100"]


async def test_lowest_free_in_a_huge_pool_comes_from_the_used_set(db: Database):
    """A /8 with 50,000 addresses in use: the answer comes from the used rows, not from walking 16M addresses."""
    net, subnet = await _net(db, "11.0.0.0/8", name="lf-huge")
    port = await _port(db, net["id"], fixed_ips=[{"ip_address": "11.0.0.2"}])
    await db.run(
        lambda conn: conn.execute(
            "INSERT INTO ip_allocations (subnet_id, ip_address, port_id, network_id)"
            " SELECT $1, '11.0.0.3'::inet + i, $2, $3 FROM generate_series(0, 49998) AS i",
            subnet["id"],
            port["id"],
            net["id"],
        )  # fmt: skip
    )
    pools = ipam.pools_from_json(subnet["allocation_pools"])
    assert await _lowest(db, subnet["id"], pools, 2) == ["11.0.195.82", "11.0.195.83"]


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=subnet_and_usage())
def test_lowest_free_matches_walking_every_address(net_dsn: str, case):
    """Property (hypothesis, real PostgreSQL): ``lowest_free`` gives exactly the ``limit`` lowest addresses of the
    pools that are not in use, as walking the whole CIDR would. The used set goes in as exclusions, which the
    query treats exactly as allocated rows (both feed the same gaps), so each example needs no setup."""
    cidr, gateway, used, limit = case
    plan = ipam.plan_subnet(str(cidr), gateway_ip=None if gateway is None else str(IPv4Address(gateway)))
    expected = [
        IPv4Address(n)
        for n in range(int(cidr.network_address), int(cidr.broadcast_address) + 1)
        if ipam.in_pools(IPv4Address(n), plan.allocation_pools) and n not in used
    ][:limit]

    async def check() -> list[IPv4Address]:
        conn = await asyncpg.connect(net_dsn)
        try:
            exclude = sorted(IPv4Address(u) for u in used)
            return await ipam.lowest_free(conn, "no-such-subnet", plan.allocation_pools, limit, exclude=exclude)
        finally:
            await conn.close()

    assert asyncio.run(check()) == expected
