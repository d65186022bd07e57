"""Placement through the API on a private cloud (3 simulated hosts of 2 vCPUs, 2 schedulers): server groups,
scheduler hints, aggregates with availability zones, extra specs and ratio overrides, explained failures,
reschedules, and a host that stops reporting."""

from __future__ import annotations

import asyncio
import json
import time

import pytest

from tests.functional.scheduler.helpers import (
    api,
    boot,
    delete_all,
    fault,
    host_of,
    report_ghost,
    settle,
    small_hosts_cloud,
)

pytestmark = pytest.mark.functional


def port_hosts(cloud, instance_id: str) -> list[str | None]:
    """The binding host of each port the instance holds."""
    return [r["binding_host"] for r in cloud.query("SELECT binding_host FROM ports WHERE device_id = $1", instance_id)]


DOWN_TIME = 6


@pytest.fixture(scope="module")
def cloud(postgres, rabbit):
    with small_hosts_cloud(postgres, rabbit, schedulers=2, scheduler={
        "service_down_time": DOWN_TIME, "host_subset_size": 1,
    }) as c:  # fmt: skip
        yield c


def test_anti_affinity_batch_spreads_and_the_next_member_is_explained(cloud):
    status, g = api(
        cloud, "POST", "/os-server-groups", {"server_group": {"name": "web", "policies": ["anti-affinity"]}}
    )
    assert status == 200 and g["server_group"]["policies"] == ["anti-affinity"], g
    gid = g["server_group"]["id"]
    try:
        ids = boot(cloud, "web", hints={"group": gid}, count=3)
        assert len(ids) == 3
        settle(cloud, ids)
        assert len({host_of(cloud, i) for i in ids}) == 3
        assert sorted(api(cloud, "GET", f"/os-server-groups/{gid}")[1]["server_group"]["members"]) == sorted(ids)
        (extra,) = boot(cloud, "web-4", hints={"group": gid})
        settle(cloud, [extra], "ERROR")
        assert port_hosts(cloud, extra) == [], "a build that ended in ERROR keeps no ports"
        message = fault(cloud, extra)
        assert "ServerGroupAntiAffinityFilter: 3 hosts already hold a member of group web (anti-affinity)" in message
        assert "server group web (anti-affinity)" in message
        events = [e for a in cloud.sdk().compute.server_actions(extra) for e in
                  cloud.sdk().compute.get_server_action(a.request_id, extra).events]  # fmt: skip
        assert any("ServerGroupAntiAffinityFilter" in (e.get("details") or "") for e in events), events
    finally:
        delete_all(cloud)
        assert api(cloud, "DELETE", f"/os-server-groups/{gid}")[0] == 204


def test_affinity_group_and_same_or_different_host_hints(cloud):
    g = api(cloud, "POST", "/os-server-groups", {"server_group": {"name": "db", "policies": ["affinity"]}})[1]
    try:
        ids = boot(cloud, "db", hints={"group": g["server_group"]["id"]}, count=2)
        settle(cloud, ids)
        assert host_of(cloud, ids[0]) == host_of(cloud, ids[1])
        first = host_of(cloud, ids[0])
        (other,) = boot(cloud, "apart", hints={"different_host": [ids[0]]})
        settle(cloud, [other])
        assert host_of(cloud, other) != first
        (near,) = boot(cloud, "near", hints={"same_host": other})
        settle(cloud, [near])
        assert host_of(cloud, near) == host_of(cloud, other)
    finally:
        delete_all(cloud)


def test_aggregate_zone_extra_specs_and_ratio_override(cloud):
    status, a = api(cloud, "POST", "/os-aggregates", {"aggregate": {"name": "fast", "availability_zone": "az-x"}})
    assert status == 200, a
    agg = a["aggregate"]["id"]
    try:
        assert api(cloud, "POST", f"/os-aggregates/{agg}/action", {"add_host": {"host": "compute-2"}})[0] == 200
        zones = {z["zoneName"] for z in api(cloud, "GET", "/os-availability-zone")[1]["availabilityZoneInfo"]}
        assert "az-x" in zones
        (s,) = boot(cloud, "in-x", az="az-x")
        settle(cloud, [s])
        assert host_of(cloud, s) == "compute-2"

        meta = {"set_metadata": {"metadata": {"ssd": "true"}}}
        assert api(cloud, "POST", f"/os-aggregates/{agg}/action", meta)[0] == 200
        conn = cloud.sdk()
        ssd = conn.compute.create_flavor(name="ssd.tiny", ram=128, vcpus=1, disk=1)
        conn.compute.create_flavor_extra_specs(ssd, {"aggregate_instance_extra_specs:ssd": "true"})
        gpu = conn.compute.create_flavor(name="gpu.tiny", ram=128, vcpus=1, disk=1)
        conn.compute.create_flavor_extra_specs(gpu, {"aggregate_instance_extra_specs:gpu": "true"})
        time.sleep(1.5)  # the aggregate change reaches the schedulers on the fanout
        (on_ssd,) = boot(cloud, "on-ssd", flavor=ssd.id)
        settle(cloud, [on_ssd])
        assert host_of(cloud, on_ssd) == "compute-2"
        (no_gpu,) = boot(cloud, "no-gpu", flavor=gpu.id)
        settle(cloud, [no_gpu], "ERROR")
        message = fault(cloud, no_gpu)
        assert "CoreFilter: 1 hosts lack 1 free vCPUs" in message  # compute-2 is full (in-x, on-ssd)
        assert "AggregateInstanceExtraSpecsFilter: 2 hosts are in no aggregate with metadata gpu=true" in message
        conn.compute.delete_server(on_ssd)
        conn.compute.wait_for_delete(conn.compute.get_server(on_ssd), wait=60)
        assert try_claim(cloud, no_gpu, "compute-2") is True  # 1 vCPU free: it fits (rolled back)

        # compute-2 holds 1 vCPU; a ratio of 0.5 makes its limit 1: the filters and the claim statement refuse more.
        meta = {"set_metadata": {"metadata": {"cpu_allocation_ratio": "0.5"}}}
        assert api(cloud, "POST", f"/os-aggregates/{agg}/action", meta)[0] == 200
        time.sleep(1.5)
        (full,) = boot(cloud, "over", az="az-x")
        settle(cloud, [full], "ERROR")
        assert "CoreFilter: 1 hosts lack 1 free vCPUs" in fault(cloud, full)
        assert try_claim(cloud, no_gpu, "compute-2") is False
    finally:
        delete_all(cloud)
        api(cloud, "POST", f"/os-aggregates/{agg}/action", {"remove_host": {"host": "compute-2"}})
        assert api(cloud, "DELETE", f"/os-aggregates/{agg}")[0] == 200


def try_claim(cloud, instance_id, host):
    """Whether the claim statement itself would place 1 vCPU on ``host`` (always rolled back)."""
    import asyncpg

    from common.db import compute_nodes

    async def run():
        conn = await asyncpg.connect(cloud.dsn)
        try:
            tx = conn.transaction()
            await tx.start()
            node = await compute_nodes.claim(
                conn, instance_id=instance_id, host=host, vcpus=1, memory_mb=128, disk_gb=1
            )
            await tx.rollback()
            return node is not None
        finally:
            await conn.close()

    return asyncio.run(run())


def test_bad_input_is_a_clear_4xx(cloud):
    image = cloud.sdk().image.find_image("tiny", ignore_missing=False)
    server = {"name": "x", "flavorRef": "1", "imageRef": image.id, "networks": "none"}
    cases = [
        ("POST", "/servers", {"server": server, "os:scheduler_hints": {"bogus": 1}}, 400),
        ("POST", "/servers", {"server": server, "os:scheduler_hints": {"group": "0" * 32}}, 400),
        ("POST", "/servers", {"server": server, "os:scheduler_hints": {"same_host": "not-a-uuid"}}, 400),
        ("POST", "/os-server-groups", {"server_group": {"name": "g", "policies": ["nope"]}}, 400),
        (
            "POST",
            "/os-server-groups",
            {"server_group": {"name": "g", "policy": "affinity", "rules": {"max_server_per_host": 2}}},
            400,
        ),  # fmt: skip
        ("GET", "/os-server-groups/missing", None, 404),
        ("GET", "/os-aggregates/abc", None, 404),
        ("POST", "/os-aggregates", {"aggregate": {}}, 400),
    ]
    for method, path, body, code in cases:
        status, data = api(cloud, method, path, body)
        assert status == code, (path, body, data)
        assert next(iter(data.values()))["code"] == code, data
    a = api(cloud, "POST", "/os-aggregates", {"aggregate": {"name": "bad"}})[1]["aggregate"]["id"]
    try:
        status, data = api(cloud, "POST", f"/os-aggregates/{a}/action",
                           {"set_metadata": {"metadata": {"ram_allocation_ratio": "abc"}}})  # fmt: skip
        assert status == 400 and "positive number" in data["badRequest"]["message"], data
        assert api(cloud, "POST", f"/os-aggregates/{a}/action", {"add_host": {"host": "nohost"}})[0] == 404
        assert api(cloud, "POST", "/os-aggregates", {"aggregate": {"name": "bad"}})[0] == 409
    finally:
        api(cloud, "DELETE", f"/os-aggregates/{a}")


def test_failed_build_is_rescheduled_and_a_silent_host_drops_out(cloud):
    """A host that reports but has no compute service: the cast to it fails, the build moves on to a real host.
    The same host alone in its zone exhausts the attempts (cause chain), then drops out once it stops reporting."""
    report_ghost(cloud)
    time.sleep(0.5)
    try:
        (s,) = boot(cloud, "moves-on")  # the ghost has by far the most free RAM: first choice
        settle(cloud, [s])
        assert host_of(cloud, s) != "ghost"
        chain = cloud.query("SELECT build_failures FROM instances WHERE id = $1", s)[0]["build_failures"]
        chain = json.loads(chain) if isinstance(chain, str) else chain
        assert [f["host"] for f in chain] == ["ghost"] and "unreachable" in chain[0]["reason"]
        assert port_hosts(cloud, s) == [host_of(cloud, s)], "the port made at create follows the build's host"

        report_ghost(cloud, availability_zone="ghost-az")
        time.sleep(1.5)
        (lost,) = boot(cloud, "nowhere", az="ghost-az")
        settle(cloud, [lost], "ERROR")
        message = fault(cloud, lost)
        assert "attempt 1 on ghost failed at cast" in message, message
        assert port_hosts(cloud, lost) == []

        time.sleep(DOWN_TIME + 1)
        (gone,) = boot(cloud, "gone", az="ghost-az")
        settle(cloud, [gone], "ERROR")
        assert f"ComputeFilter: 1 hosts are disabled or have not reported within {DOWN_TIME}s" in fault(cloud, gone)
    finally:
        delete_all(cloud)
