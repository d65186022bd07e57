"""The host view's numpy columns against the plain Python they replace: the fused fit test and the weighers
must choose the same hosts in the same order, after any sequence of reports, claims, reservations and settles."""

from __future__ import annotations

import time

from hypothesis import given, settings
from hypothesis import strategies as st

from services.scheduler.filters import FILTERS, passing_hosts
from services.scheduler.host_state import HostState, HostView
from services.scheduler.weighers import load_weighers, weigh


class Conf:
    class scheduler:  # oslo.config's attribute access
        ram_weight_multiplier = 1.0
        cpu_weight_multiplier = 0.5
        disk_weight_multiplier = 0.25
        num_instances_weight_multiplier = -0.1
        soft_affinity_weight_multiplier = 1.0
        soft_anti_affinity_weight_multiplier = 1.0
        build_failure_weight_multiplier = 1000000.0


def fits_in_python(view: HostView, vcpus: int, ram: int, disk: int) -> list[HostState]:
    cutoff = time.monotonic() - view.service_down_time
    return [
        h
        for h in view.hosts.values()
        if h.free_memory_mb >= ram and h.free_vcpus >= vcpus and h.free_disk_gb >= disk
        and h.last_seen >= cutoff and not h.disabled
    ]  # fmt: skip


def weigh_in_python(hosts: list[HostState], multipliers: list[tuple[float, str]], best: int) -> list[HostState]:
    totals = [0.0] * len(hosts)
    for m, attr in multipliers:
        values = [float(getattr(h, attr)) for h in hosts]
        lo, hi = min(values), max(values)
        if hi != lo:
            totals = [t + m / (hi - lo) * v for t, v in zip(totals, values, strict=True)]
    order = sorted(range(len(hosts)), key=totals.__getitem__, reverse=True)
    return [hosts[i] for i in order[:best]]


host = st.fixed_dictionaries({
    "vcpus": st.integers(1, 8), "memory_mb": st.sampled_from([1024, 2048, 4096]), "local_gb": st.integers(1, 40),
    "running_vms": st.integers(0, 3), "disabled": st.booleans(), "cpu_allocation_ratio": st.sampled_from([1.0, 4.0]),
})  # fmt: skip
step = st.tuples(st.sampled_from(["report", "claimed", "reserve", "settle", "down"]), st.integers(0, 30),
                 st.integers(0, 4), st.sampled_from([0, 256, 1024]), st.integers(0, 5))  # fmt: skip


@settings(max_examples=150, deadline=None)
@given(
    hosts=st.lists(host, min_size=1, max_size=30),
    steps=st.lists(step, max_size=40),
    flavor=st.tuples(st.integers(1, 4), st.sampled_from([128, 512, 2048]), st.integers(0, 10)),
    best=st.integers(1, 12),
)
def test_columns_choose_what_python_chooses(hosts, steps, flavor, best):
    view = HostView(service_down_time=60)
    for i, h in enumerate(hosts):
        view.update({"host": f"h{i}", **h})
    names = list(view.hosts)
    for kind, n, vcpus, ram, disk in steps:  # every way the view changes, interleaved with reads of the columns
        name = names[n % len(names)]
        if kind == "report":
            view.update({"host": name, **hosts[n % len(hosts)], "running_vms": vcpus})
        elif kind == "claimed":
            view.claimed({"host": name, "vcpus_used": vcpus, "memory_mb_used": ram, "local_gb_used": disk})
        elif kind == "reserve":
            view.reserve(name, vcpus, ram, disk)
        elif kind == "settle":
            view.settle(name, vcpus, ram, disk, None)
        else:
            view.hosts[name].last_seen = time.monotonic() - 120
        view.columns()
    vcpus, ram, disk = flavor
    spec = {"flavor": {"vcpus": vcpus, "ram_mb": ram, "disk_gb": disk}}
    passed, _ = passing_hosts([cls(view) for cls in FILTERS], view, spec)
    assert passed == fits_in_python(view, vcpus, ram, disk)
    if not passed:
        return
    weighers = load_weighers(["RAMWeigher", "CPUWeigher", "DiskWeigher", "NumInstancesWeigher"], view, Conf)
    expected = weigh_in_python(
        passed, [(1.0, "free_memory_mb"), (0.5, "free_vcpus"), (0.25, "free_disk_gb"), (-0.1, "running_vms")], best
    )
    assert [h.host for h in weigh(passed, spec, weighers, best=best)] == [h.host for h in expected]
    # The rows the weighers read come with the fit test's hosts; a plain list (another filter's) is looked up.
    assert passed.rows.tolist() == [h.row for h in passed]
    assert weigh(list(passed), spec, weighers, best=best) == weigh(passed, spec, weighers, best=best)
