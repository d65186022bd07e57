"""Each filter and weigher on its own (pure: an in-memory host view), plus config-selected loading."""

import pytest

from services.scheduler.filters import ALL_FILTERS, load_filters, run_filters
from services.scheduler.host_state import HostView
from services.scheduler.weighers import load_weighers, weigh


def spec(vcpus=1, ram=128, disk=1, extra_specs=None, **kw):
    flavor = {"vcpus": vcpus, "ram_mb": ram, "disk_gb": disk, "extra_specs": extra_specs or {}}
    return {"instance_id": "i", "flavor": flavor, **kw}


def view_of(*hosts, **common):
    view = HostView(60)
    for name, extra in hosts:
        view.update({"host": name, "vcpus": 4, "memory_mb": 4096, "local_gb": 100, **common, **extra})
    return view


def passing(view, names, s):
    hosts, why = run_filters(load_filters(names, view), list(view.hosts.values()), s)
    return sorted(h.host for h in hosts), why


def test_unknown_filter_or_weigher_names_fail_loudly():
    with pytest.raises(ValueError, match="Nope"):
        load_filters(["RamFilter", "Nope"], HostView(60))
    with pytest.raises(ValueError, match="Nah"):
        load_weighers(["Nah"], HostView(60))


def test_aggregates_give_zone_metadata_and_ratio_overrides():
    view = view_of(("a", {}), ("b", {}))
    view.set_aggregates([{"name": "fast", "hosts": ["b"], "availability_zone": "az1",
                          "metadata": {"ssd": "true", "ram_allocation_ratio": "0.5"}}])  # fmt: skip
    b = view.hosts["b"]
    assert b.zone == "az1" and view.hosts["a"].zone == "nova"
    assert b.memory_mb_limit == 4096 * 0.5
    assert passing(view, ["AvailabilityZoneFilter"], spec(availability_zone="az1"))[0] == ["b"]
    ssd = spec(extra_specs={"aggregate_instance_extra_specs:ssd": "true"})
    assert passing(view, ["AggregateInstanceExtraSpecsFilter"], ssd)[0] == ["b"]
    hosts, why = passing(view, ["AggregateInstanceExtraSpecsFilter"], spec(extra_specs={"gpu": "1"}))
    assert hosts == [] and why == ["AggregateInstanceExtraSpecsFilter: 2 hosts are in no aggregate with metadata gpu=1"]
    assert passing(view, ["RamFilter"], spec(ram=3000))[0] == ["a"]


def test_image_properties_filter():
    view = view_of(("x86", {"cpu_info": {"arch": "x86_64"}}), ("arm", {"cpu_info": {"arch": "aarch64"}}))
    s = spec(image={"properties": {"hw_architecture": "aarch64"}})
    assert passing(view, ["ImagePropertiesFilter"], s)[0] == ["arm"]
    s = spec(image={"properties": {"img_hv_type": "xen"}})
    hosts, why = passing(view, ["ImagePropertiesFilter"], s)
    assert hosts == [] and "img_hv_type=xen" in why[0]


def test_server_group_filters_and_rules():
    view = view_of(("a", {}), ("b", {}), ("c", {}))
    group = {"id": "g", "name": "web", "policy": "anti-affinity", "rules": {}, "hosts": {"a": 1, "b": 2}}
    hosts, why = passing(view, ["ServerGroupAntiAffinityFilter"], spec(group=group))
    assert hosts == ["c"] and why == ["ServerGroupAntiAffinityFilter: 2 hosts already hold a member of group web "
                                      "(anti-affinity)"]  # fmt: skip
    group["rules"] = {"max_server_per_host": 2}
    assert passing(view, ["ServerGroupAntiAffinityFilter"], spec(group=group))[0] == ["a", "c"]
    aff = {"id": "g", "name": "db", "policy": "affinity", "rules": {}, "hosts": {"b": 1}}
    assert passing(view, ["ServerGroupAffinityFilter"], spec(group=aff))[0] == ["b"]
    aff["hosts"] = {}
    assert passing(view, ["ServerGroupAffinityFilter"], spec(group=aff))[0] == ["a", "b", "c"]


def test_same_and_different_host_hints():
    view = view_of(("a", {}), ("b", {}))
    assert passing(view, ["SameHostFilter"], spec(same_host_hosts={"b"}))[0] == ["b"]
    assert passing(view, ["DifferentHostFilter"], spec(different_host_hosts={"b"}))[0] == ["a"]


def test_build_failures_filter_and_weigher():
    class Conf:
        class scheduler:
            build_failure_threshold = 2
            build_failure_weight_multiplier = 1000000.0

    view = view_of(("a", {}), ("b", {}))
    view.build_failed("a")
    f = load_filters(["BuildFailureFilter"], view, Conf)
    assert [h.host for h in run_filters(f, list(view.hosts.values()), spec())[0]] == ["a", "b"]
    w = load_weighers(["BuildFailureWeigher"], view, Conf)
    assert [h.host for h in weigh(list(view.hosts.values()), spec(), w)] == ["b", "a"]
    view.build_failed("a")
    assert [h.host for h in run_filters(f, list(view.hosts.values()), spec())[0]] == ["b"]


def test_weighers_spread_pack_and_soft_groups():
    view = view_of(("small", {"memory_mb": 2048}), ("big", {"memory_mb": 8192}))
    hosts = list(view.hosts.values())

    class Conf:
        class scheduler:
            ram_weight_multiplier = -1.0
            soft_affinity_weight_multiplier = 1.0
            soft_anti_affinity_weight_multiplier = 1.0

    assert [h.host for h in weigh(hosts, spec())] == ["big", "small"]  # spread (default)
    assert [h.host for h in weigh(hosts, spec(), load_weighers(["RAMWeigher"], view, Conf))] == ["small", "big"]
    soft = {"id": "g", "name": "g", "policy": "soft-affinity", "rules": {}, "hosts": {"small": 1}}
    Conf.scheduler.ram_weight_multiplier = 0.5
    w = load_weighers(["RAMWeigher", "ServerGroupSoftAffinityWeigher"], view, Conf)
    assert [h.host for h in weigh(hosts, spec(group=soft), w)] == ["small", "big"]
    soft["policy"] = "soft-anti-affinity"
    soft["hosts"] = {"big": 1}
    w = load_weighers(["RAMWeigher", "ServerGroupSoftAntiAffinityWeigher"], view, Conf)
    assert [h.host for h in weigh(hosts, spec(group=soft), w)] == ["small", "big"]


def test_in_flight_reservations_survive_a_resync():
    view = view_of(("a", {}))
    view.reserve("a", 1, 1000, 1)
    view.claimed({"host": "a", "vcpus_used": 2, "memory_mb_used": 500, "local_gb_used": 2})  # DB: others' claims
    assert view.hosts["a"].memory_mb_used == 1500
    view.settle("a", 1, 1000, 1, {"host": "a", "vcpus_used": 3, "memory_mb_used": 1500, "local_gb_used": 3})
    assert view.hosts["a"].memory_mb_used == 1500 and not view.has_pending()


def test_every_filter_is_selectable():
    assert len(load_filters(list(ALL_FILTERS), HostView(60))) == len(ALL_FILTERS)
