"""Placement rules through the API on a private cloud (3 simulated hosts of 2 vCPUs and 4 GiB, one scheduler):
multi-create all or nothing at min_count, the second look after every claim was lost to a stale view, image
properties against hosts, soft (anti-)affinity groups, and hosts that just failed builds.

One scheduler and ``host_subset_size`` 1 make the choice among equal hosts deterministic. The soft group weighers
get a multiplier of 10: at the default 1.0 they lose to the RAM and vCPU spreading weighers (1.0 + 0.5, every
weigher normalised to 0..1 as in Nova), so a soft-affinity batch spreads. The build-failure threshold is 2 so the
weigher (after one failure) and the filter (after two) can both be seen.
"""

from __future__ import annotations

import json
import re
import time
from collections import Counter

import pytest

from tests.functional.scheduler.helpers import (
    api,
    assert_no_leaked_claims,
    boot,
    delete_all,
    fault,
    host_of,
    report_ghost,
    settle,
    small_hosts_cloud,
)

pytestmark = pytest.mark.functional

HOSTS = ["compute-0", "compute-1", "compute-2"]


@pytest.fixture(scope="module")
def cloud(postgres, rabbit):
    # The soft-group weighers run at their defaults: the tests show those make the policies hold.
    with small_hosts_cloud(postgres, rabbit, schedulers=1, scheduler={
        "service_down_time": 60, "host_subset_size": 1, "build_failure_threshold": 2,
    }) as c:  # fmt: skip
        yield c


def compute_log_mentions(cloud, sid: str) -> int:
    return cloud.grep_logs(sid)["compute"]


def scheduler_events(cloud, sid: str) -> list[str]:
    rows = cloud.query(
        "SELECT e.details FROM instance_action_events e JOIN instance_actions a ON a.id = e.action_id"
        " WHERE a.instance_id = $1 AND e.event = 'scheduler_select_destination' ORDER BY e.id",
        sid,
    )
    return [r["details"] for r in rows]


def build_failures(cloud, sid: str) -> list[dict]:
    chain = cloud.query("SELECT build_failures FROM instances WHERE id = $1", sid)[0]["build_failures"]
    return json.loads(chain) if isinstance(chain, str) else chain


# ----- min_count ------------------------------------------------------------------------------------------------


def test_min_count_not_met_fails_the_whole_batch_and_gives_every_claim_back(cloud):
    """m1.medium fills a host: 3 fit, 4 are asked with min_count 4. All four go to ERROR saying so, nothing is
    cast, no claim, allocation or port is left; the same 3 hosts then take a batch of 3 at once."""
    try:
        ids = boot(cloud, "short", flavor="3", count=4, min_count=4)
        assert len(ids) == 4
        settle(cloud, ids, "ERROR")
        for sid in ids:
            message = fault(cloud, sid)
            assert "Only 3 of the 4 servers requested together could be placed, fewer than min_count 4" in message
            assert "No valid host was found for 2 vCPU, 4096 MiB RAM, 40 GiB disk among 3 hosts" in message
            assert "RamFilter: 3 hosts lack 4096 MiB free RAM" in message, message
            assert host_of(cloud, sid) is None
            assert list(cloud.sdk().network.ports(device_id=sid)) == [], "a port was made for a failed batch"
            assert compute_log_mentions(cloud, sid) == 0, "a build of the failed batch reached a compute"
        assert cloud.query("SELECT * FROM allocations WHERE instance_id = ANY($1)", ids) == []
        assert_no_leaked_claims(cloud)
        assert {r["vcpus_used"] for r in cloud.query("SELECT vcpus_used FROM compute_nodes")} == {0}

        again = boot(cloud, "fits", flavor="3", count=3)  # the scheduler's view got the claims back too
        settle(cloud, again)
        assert sorted(host_of(cloud, sid) for sid in again) == HOSTS
    finally:
        delete_all(cloud)
    assert_no_leaked_claims(cloud)


def test_min_count_met_builds_the_placed_and_explains_the_rest(cloud):
    """4 asked, min_count 2, 3 fit: three build, the fourth goes to ERROR with its own no-host fault."""
    try:
        ids = boot(cloud, "enough", flavor="3", count=4, min_count=2)
        built, rest = ids[:3], ids[3]
        settle(cloud, built)
        settle(cloud, [rest], "ERROR")
        assert sorted(host_of(cloud, sid) for sid in built) == HOSTS
        message = fault(cloud, rest)
        no_host = "No valid host was found for 2 vCPU, 4096 MiB RAM, 40 GiB disk among 3 hosts."
        assert message.startswith(no_host), message
        assert "RamFilter: 3 hosts lack 4096 MiB free RAM" in message and "min_count" not in message, message
        assert all(compute_log_mentions(cloud, sid) > 0 for sid in built)  # the log check above can see builds
        assert compute_log_mentions(cloud, rest) == 0
        assert len(cloud.query("SELECT * FROM allocations WHERE instance_id = ANY($1)", ids)) == 3
        assert_no_leaked_claims(cloud)
    finally:
        delete_all(cloud)


# ----- every claim lost: settle, reload usage, look once more ----------------------------------------------------


def _last_report(cloud, host: str):
    return cloud.query("SELECT last_report_at FROM compute_nodes WHERE host = $1", host)[0]["last_report_at"]


def wait_report_persisted(cloud, host: str = "compute-2") -> None:
    """Until the scheduler next persists ``host``'s capacity report. Persisting refreshes the scheduler's view of
    the host's usage, and an unchanged report is persisted every 3 report intervals (6 s here): a view made stale
    right after this stays stale for the next few seconds (the hosts, served by one process, report together)."""
    before = _last_report(cloud, host)
    deadline = time.monotonic() + 15
    while _last_report(cloud, host) == before:
        assert time.monotonic() < deadline, f"no report of {host} persisted in 15 s"
        time.sleep(0.05)


def set_usage_behind_the_schedulers_back(cloud, full: list[str], empty: list[str]) -> None:
    """Hosts ``full`` or ``empty`` in the database, with an ``updated_at`` the periodic usage reload skips."""
    cloud.query(
        "UPDATE compute_nodes SET vcpus_used = CASE WHEN host = ANY($1) THEN vcpus ELSE 0 END,"
        " updated_at = now() - interval '1 hour' WHERE host = ANY($1) OR host = ANY($2)",
        full, empty,
    )  # fmt: skip


def restore_usage(cloud) -> None:
    cloud.query(
        "UPDATE compute_nodes n SET vcpus_used = COALESCE((SELECT sum(vcpus) FROM allocations a"
        " WHERE a.compute_node_id = n.id), 0), updated_at = now()"
    )


def lost_claims_logged(cloud, sid: str) -> int:
    return sum(cloud.grep_logs(f"lost for {sid}").values())


def test_every_claim_lost_then_placed_on_the_host_the_reload_shows(cloud):
    """The scheduler believes compute-2 full and the others empty; the database says the opposite. Its claims on
    compute-0 and -1 are lost, compute-2 never passed its filters: only reloading usage and looking once more
    places the server there (without that second look it would be ERROR, 'every claim lost')."""
    try:
        cloud.query("UPDATE compute_nodes SET vcpus_used = vcpus, updated_at = now() WHERE host = 'compute-2'")
        wait_report_persisted(cloud)  # the scheduler has seen compute-2 full (usage reload, the report's row)
        set_usage_behind_the_schedulers_back(cloud, full=["compute-0", "compute-1"], empty=["compute-2"])
        (sid,) = boot(cloud, "second-look")
        settle(cloud, [sid])
        assert host_of(cloud, sid) == "compute-2"
        (chose,) = scheduler_events(cloud, sid)
        assert re.fullmatch(r"chose host compute-2 \(attempt 1, after [12] lost claim race\(s\)\)", chose), chose
        assert lost_claims_logged(cloud, sid) >= 1
    finally:
        delete_all(cloud)
        restore_usage(cloud)
    assert_no_leaked_claims(cloud)


def test_every_claim_lost_and_still_no_room_is_explained_by_the_filters(cloud):
    """Every host full behind the scheduler's back: every claim is lost, the reload shows why, and the fault names
    the filter that removes them now, not the lost races."""
    try:
        wait_report_persisted(cloud)
        set_usage_behind_the_schedulers_back(cloud, full=HOSTS, empty=[])
        (sid,) = boot(cloud, "no-room")
        settle(cloud, [sid], "ERROR")
        message = fault(cloud, sid)
        assert message == (
            "No valid host was found for 1 vCPU, 128 MiB RAM, 1 GiB disk among 3 hosts. CoreFilter: 3 hosts lack 1"
            " free vCPUs"
        ), message
        assert lost_claims_logged(cloud, sid) >= 1
    finally:
        delete_all(cloud)
        restore_usage(cloud)
    assert_no_leaked_claims(cloud)


# ----- image properties ------------------------------------------------------------------------------------------


def make_image(cloud, name: str, **properties: str):
    data = (cloud.workdir / "fake-image.qcow2").read_bytes()
    return cloud.sdk().image.create_image(
        name=name, disk_format="qcow2", container_format="bare", data=data, visibility="public", **properties
    )


def test_image_architecture_and_hypervisor_type_must_match_the_host(cloud):
    (host,) = cloud.query("SELECT DISTINCT cpu_info->>'arch' AS arch, hypervisor_type FROM compute_nodes")
    arch, hv_type = host["arch"], host["hypervisor_type"]  # i686 and TEST on libvirt's test driver
    assert arch and hv_type, host
    conn = cloud.sdk()
    images = [
        make_image(cloud, "native", hw_architecture=arch, img_hv_type=hv_type.lower()),
        make_image(cloud, "arm", hw_architecture="aarch64"),
        make_image(cloud, "on-xen", hypervisor_type="xen", architecture=arch),
    ]
    try:
        (native,) = boot(cloud, "native", image="native")
        (arm,) = boot(cloud, "arm", image="arm")
        (xen,) = boot(cloud, "xen", image="on-xen")
        settle(cloud, [native])
        settle(cloud, [arm, xen], "ERROR")
        assert "ImagePropertiesFilter: 3 hosts do not match the image's hw_architecture=aarch64" in fault(cloud, arm)
        assert "ImagePropertiesFilter: 3 hosts do not match the image's architecture" in fault(cloud, xen)
        assert f"architecture={arch.lower()}, hypervisor_type=xen" in fault(cloud, xen)
    finally:
        delete_all(cloud)
        for image in images:
            conn.image.delete_image(image)


# ----- soft affinity / soft anti-affinity ------------------------------------------------------------------------


def make_group(cloud, name: str, policy: str) -> str:
    status, g = api(cloud, "POST", "/os-server-groups", {"server_group": {"name": name, "policies": [policy]}})
    assert status == 200, g
    return g["server_group"]["id"]


def test_soft_affinity_keeps_members_together_while_they_fit(cloud):
    """Spreading weighers alone would put three members on three hosts. Soft affinity puts the first two together;
    the third does not fit there any more and goes elsewhere rather than failing."""
    gid = make_group(cloud, "near", "soft-affinity")
    try:
        ids = boot(cloud, "near", hints={"group": gid}, count=3)
        settle(cloud, ids)
        hosts = [host_of(cloud, sid) for sid in ids]
        assert hosts[0] == hosts[1] and hosts[2] != hosts[0], hosts
    finally:
        delete_all(cloud)
        assert api(cloud, "DELETE", f"/os-server-groups/{gid}")[0] == 204


def test_soft_anti_affinity_spreads_members_against_the_free_ram_and_still_places_when_it_cannot(cloud):
    """Two 2 GiB fillers on two hosts leave the third with by far the most free RAM, so the spreading weighers
    want every member there. Soft anti-affinity spreads the first three over the three hosts; the fourth only fits
    beside a member and is placed there."""
    (f1,) = boot(cloud, "filler-a", flavor="2")
    (f2,) = boot(cloud, "filler-b", flavor="2", hints={"different_host": [f1]})
    gid = make_group(cloud, "apart", "soft-anti-affinity")
    try:
        settle(cloud, [f1, f2])
        (empty,) = set(HOSTS) - {host_of(cloud, f1), host_of(cloud, f2)}
        ids = boot(cloud, "apart", hints={"group": gid}, count=4)
        settle(cloud, ids)
        hosts = [host_of(cloud, sid) for sid in ids]
        assert hosts[0] == empty, hosts
        assert sorted(hosts[:3]) == HOSTS, hosts
        assert Counter(hosts) == {empty: 2, **{h: 1 for h in HOSTS if h != empty}}, hosts
    finally:
        delete_all(cloud)
        assert api(cloud, "DELETE", f"/os-server-groups/{gid}")[0] == 204


# ----- recent build failures (last: the ghost host stays in this cloud's scheduler) --------------------------------


def test_a_host_that_just_failed_a_build_is_weighed_down_then_filtered_out(cloud):
    """``ghost`` reports by far the most room but no compute serves it: the cast of a build there is not taken, a
    failed attempt. After one such failure the BuildFailureWeigher sends the next build elsewhere at once; after
    two (threshold 2) the BuildFailureFilter leaves it out even where it is the only host."""
    report_ghost(cloud)
    time.sleep(1.0)
    try:
        (first,) = boot(cloud, "bf-first")
        settle(cloud, [first])
        assert host_of(cloud, first) in HOSTS
        assert [(f["host"], f["step"]) for f in build_failures(cloud, first)] == [("ghost", "cast")]

        report_ghost(cloud)  # still up and still the roomiest
        (second,) = boot(cloud, "bf-second")
        settle(cloud, [second])
        assert host_of(cloud, second) in HOSTS
        assert build_failures(cloud, second) == [], "the ghost was tried again right after failing"

        report_ghost(cloud, availability_zone="ghost-az")
        time.sleep(1.5)  # persisted: the API knows the zone
        (third,) = boot(cloud, "bf-third", az="ghost-az")
        settle(cloud, [third], "ERROR")
        assert "attempt 1 on ghost failed at cast" in fault(cloud, third)  # the ghost's second failure

        (fourth,) = boot(cloud, "bf-fourth", az="ghost-az")
        settle(cloud, [fourth], "ERROR")
        message = fault(cloud, fourth)
        assert "BuildFailureFilter: 1 hosts failed 2+ builds in the last 600s" in message, message
        assert build_failures(cloud, fourth) == [] and "Earlier attempts" not in message
    finally:
        delete_all(cloud)
