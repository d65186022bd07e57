import time

from hypothesis import given
from hypothesis import strategies as st

from services.scheduler.filters import FILTERS, run_filters
from services.scheduler.host_state import HostState, HostView
from services.scheduler.weighers import weigh


def spec(vcpus=1, ram=128, disk=1, **kw):
    return {"instance_id": "i", "flavor": {"vcpus": vcpus, "ram_mb": ram, "disk_gb": disk}, **kw}


def report(host, **kw):
    base = {"host": host, "vcpus": 4, "memory_mb": 4096, "local_gb": 100}
    base.update(kw)
    return base


def test_limits_apply_reserved_then_ratio():
    h = HostState(host="a", vcpus=4, memory_mb=4096, local_gb=100, reserved_host_memory_mb=512,
                  ram_allocation_ratio=1.5, cpu_allocation_ratio=16.0, reserved_host_cpus=1,
                  disk_allocation_ratio=1.0, reserved_host_disk_gb=10)  # fmt: skip
    assert h.memory_mb_limit == (4096 - 512) * 1.5
    assert h.vcpus_limit == 3 * 16
    assert h.local_gb_limit == 90
    h.memory_mb_used = 5000
    assert h.free_memory_mb == (4096 - 512) * 1.5 - 5000


@given(
    total=st.integers(1, 10**6), reserved=st.integers(0, 10**5), ratio=st.floats(0.1, 16), used=st.integers(0, 10**7),
    want=st.integers(1, 10**6),
)  # fmt: skip
def test_ram_filter_agrees_with_the_claim_statement(total, reserved, ratio, used, want):
    """The in-memory filter and the SQL claim use the same inequality: used + want <= (total - reserved) * ratio."""
    h = HostState(host="a", vcpus=1, memory_mb=total, local_gb=1, reserved_host_memory_mb=reserved,
                  ram_allocation_ratio=ratio, memory_mb_used=used)  # fmt: skip
    view = HostView(60)
    view.hosts["a"] = h
    passed, _ = run_filters([f(view) for f in FILTERS], [h], spec(ram=want, disk=0))
    assert bool(passed) == (used + want <= (total - reserved) * ratio)


def test_no_host_explanation_counts_each_filter():
    view = HostView(60)
    for i in range(5):
        view.update(report(f"small{i}", memory_mb=1024))
    for i in range(3):
        view.update(report(f"big{i}", memory_mb=16384, disabled=True))
    view.update(report("failed", memory_mb=16384))
    hosts, why = run_filters([f(view) for f in FILTERS], list(view.hosts.values()),
                             spec(ram=4096, excluded_hosts=["failed"]))  # fmt: skip
    assert hosts == []
    assert why == [
        "ComputeFilter: 3 hosts are disabled or have not reported within 60s",
        "RetryFilter: 1 hosts already failed this build",
        "RamFilter: 5 hosts lack 4096 MiB free RAM",
    ]


def test_silent_hosts_drop_out_after_service_down_time():
    view = HostView(service_down_time=0.05)
    view.update(report("a"))
    compute_filter = FILTERS[0](view)
    assert compute_filter.host_passes(view.hosts["a"], spec())
    time.sleep(0.08)
    assert not compute_filter.host_passes(view.hosts["a"], spec())
    view.update(report("a"))
    assert compute_filter.host_passes(view.hosts["a"], spec())


def test_claim_result_updates_the_view():
    view = HostView(60)
    view.update(report("a"))
    view.claimed({"host": "a", "vcpus_used": 2, "memory_mb_used": 256, "local_gb_used": 2})
    assert view.hosts["a"].memory_mb_used == 256


def test_a_report_never_overwrites_claimed_usage():
    """A host reports the guests it runs; claims whose builds have not reached it are in the DB, not the report.
    Taken as usage, the report would hand that room out again."""
    view = HostView(60)
    view.bootstrap([{**report("a", memory_mb=4096), "memory_mb_used": 1024, "vcpus_used": 1, "local_gb_used": 1}])
    assert view.hosts["a"].memory_mb_used == 1024  # the DB's usage at start
    view.claimed({"host": "a", "vcpus_used": 2, "memory_mb_used": 2048, "local_gb_used": 2})
    view.update({**report("a", memory_mb=8192), "vcpus_used": 0, "memory_mb_used": 0, "local_gb_used": 0})
    a = view.hosts["a"]
    assert (a.vcpus_used, a.memory_mb_used, a.local_gb_used, a.memory_mb) == (2, 2048, 2, 8192)


def test_weigher_spreads_by_free_ram():
    view = HostView(60)
    view.update(report("a", memory_mb=2048))
    view.update(report("b", memory_mb=8192))
    assert [h.host for h in weigh(list(view.hosts.values()), spec())] == ["b", "a"]
