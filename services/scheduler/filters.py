"""Host filters: small classes, each able to say how many hosts it removed and why.

``[scheduler] enabled_filters`` names them in the order they run; ``load_filters`` builds that list. A filter
whose ``applies(spec)`` is false for a request is skipped for it (no hint, no group, no image property...).
"""

from __future__ import annotations

from typing import Any, ClassVar

from oslo_config import cfg

from services.scheduler.host_state import HostState, HostView

__all__ = ["ALL_FILTERS", "FILTERS", "BaseFilter", "load_filters", "passing_hosts", "run_filters"]


class BaseFilter:
    name: ClassVar[str] = "BaseFilter"

    def __init__(self, view: HostView, conf: cfg.ConfigOpts | None = None) -> None:
        self.view = view
        self.conf = conf

    def applies(self, spec: dict[str, Any]) -> bool:
        return True

    def host_passes(self, host: HostState, spec: dict[str, Any]) -> bool:
        raise NotImplementedError

    def filter_all(self, hosts: list[HostState], spec: dict[str, Any]) -> list[HostState]:
        """The hosts that pass (the four filters every request runs are one vector pass instead: ``passing_hosts``)."""
        passes = self.host_passes
        return [h for h in hosts if passes(h, spec)]

    def explain(self, removed: int, spec: dict[str, Any]) -> str:
        raise NotImplementedError


class ComputeFilter(BaseFilter):
    name = "ComputeFilter"

    def host_passes(self, host: HostState, spec: dict[str, Any]) -> bool:
        return not host.disabled and self.view.is_up(host)

    def explain(self, removed: int, spec: dict[str, Any]) -> str:
        return f"{removed} hosts are disabled or have not reported within {self.view.service_down_time:.0f}s"


class RetryFilter(BaseFilter):
    name = "RetryFilter"

    def applies(self, spec: dict[str, Any]) -> bool:
        return bool(spec.get("excluded_hosts"))

    def host_passes(self, host: HostState, spec: dict[str, Any]) -> bool:
        return host.host not in spec["excluded_hosts"]

    def explain(self, removed: int, spec: dict[str, Any]) -> str:
        return f"{removed} hosts already failed this build"


class AvailabilityZoneFilter(BaseFilter):
    name = "AvailabilityZoneFilter"

    def applies(self, spec: dict[str, Any]) -> bool:
        return bool(spec.get("availability_zone"))

    def host_passes(self, host: HostState, spec: dict[str, Any]) -> bool:
        return host.zone == spec["availability_zone"]

    def explain(self, removed: int, spec: dict[str, Any]) -> str:
        return f"{removed} hosts are not in availability zone {spec.get('availability_zone')!r}"


class RamFilter(BaseFilter):
    name = "RamFilter"

    def host_passes(self, host: HostState, spec: dict[str, Any]) -> bool:
        return host.free_memory_mb >= spec["flavor"]["ram_mb"]

    def explain(self, removed: int, spec: dict[str, Any]) -> str:
        return f"{removed} hosts lack {spec['flavor']['ram_mb']} MiB free RAM"


class CoreFilter(BaseFilter):
    name = "CoreFilter"

    def host_passes(self, host: HostState, spec: dict[str, Any]) -> bool:
        return host.free_vcpus >= spec["flavor"]["vcpus"]

    def explain(self, removed: int, spec: dict[str, Any]) -> str:
        return f"{removed} hosts lack {spec['flavor']['vcpus']} free vCPUs"


class DiskFilter(BaseFilter):
    name = "DiskFilter"

    def host_passes(self, host: HostState, spec: dict[str, Any]) -> bool:
        return host.free_disk_gb >= spec["flavor"]["disk_gb"]

    def explain(self, removed: int, spec: dict[str, Any]) -> str:
        return f"{removed} hosts lack {spec['flavor']['disk_gb']} GiB free disk"


_AGG_SCOPE = "aggregate_instance_extra_specs:"


def _aggregate_specs(spec: dict[str, Any]) -> dict[str, str]:
    """Flavor extra specs matched against aggregate metadata: the scoped ones and the unscoped ones (Nova)."""
    out = {}
    for key, value in (spec["flavor"].get("extra_specs") or {}).items():
        if key.startswith(_AGG_SCOPE):
            out[key[len(_AGG_SCOPE) :]] = str(value)
        elif ":" not in key:
            out[key] = str(value)
    return out


class AggregateInstanceExtraSpecsFilter(BaseFilter):
    """A flavor extra spec ``k=v`` (or ``aggregate_instance_extra_specs:k=v``) needs an aggregate of the host
    whose metadata has ``k=v`` (comma-separated alternatives in ``v`` are allowed)."""

    name = "AggregateInstanceExtraSpecsFilter"

    def applies(self, spec: dict[str, Any]) -> bool:
        return bool(_aggregate_specs(spec))

    def host_passes(self, host: HostState, spec: dict[str, Any]) -> bool:
        for key, wanted in _aggregate_specs(spec).items():
            have = host.aggregate_metadata.get(key)
            if not have or not ({w.strip() for w in wanted.split(",")} & have):
                return False
        return True

    def explain(self, removed: int, spec: dict[str, Any]) -> str:
        wants = ", ".join(f"{k}={v}" for k, v in sorted(_aggregate_specs(spec).items()))
        return f"{removed} hosts are in no aggregate with metadata {wants}"


# Image property -> how to read the host's value; both sides compared in lower case.
_IMAGE_PROPS = {
    "hw_architecture": lambda h: h.arch,
    "architecture": lambda h: h.arch,
    "img_hv_type": lambda h: h.hypervisor_type,
    "hypervisor_type": lambda h: h.hypervisor_type,
}


def _image_wants(spec: dict[str, Any]) -> dict[str, str]:
    props = (spec.get("image") or {}).get("properties") or {}
    return {k: str(props[k]).lower() for k in _IMAGE_PROPS if props.get(k)}


class ImagePropertiesFilter(BaseFilter):
    """Image properties ``hw_architecture``/``architecture`` and ``img_hv_type``/``hypervisor_type``."""

    name = "ImagePropertiesFilter"

    def applies(self, spec: dict[str, Any]) -> bool:
        return bool(_image_wants(spec))

    def host_passes(self, host: HostState, spec: dict[str, Any]) -> bool:
        return all(_IMAGE_PROPS[k](host).lower() == v for k, v in _image_wants(spec).items())

    def explain(self, removed: int, spec: dict[str, Any]) -> str:
        wants = ", ".join(f"{k}={v}" for k, v in sorted(_image_wants(spec).items()))
        return f"{removed} hosts do not match the image's {wants}"


def _group(spec: dict[str, Any], policy: str) -> dict[str, Any] | None:
    group = spec.get("group")
    return group if group and group["policy"] == policy else None


class ServerGroupAntiAffinityFilter(BaseFilter):
    """Hard anti-affinity: at most ``max_server_per_host`` (rule, default 1) members per host."""

    name = "ServerGroupAntiAffinityFilter"

    def applies(self, spec: dict[str, Any]) -> bool:
        return _group(spec, "anti-affinity") is not None

    def host_passes(self, host: HostState, spec: dict[str, Any]) -> bool:
        group = spec["group"]
        return group["hosts"].get(host.host, 0) < int(group["rules"].get("max_server_per_host", 1))

    def explain(self, removed: int, spec: dict[str, Any]) -> str:
        g = spec["group"]
        limit = int(g["rules"].get("max_server_per_host", 1))
        what = "a member" if limit == 1 else f"{limit} members"
        return f"{removed} hosts already hold {what} of group {g['name']} (anti-affinity)"


class ServerGroupAffinityFilter(BaseFilter):
    """Hard affinity: once a member is placed, the others go to its host."""

    name = "ServerGroupAffinityFilter"

    def applies(self, spec: dict[str, Any]) -> bool:
        group = _group(spec, "affinity")
        return group is not None and bool(group["hosts"])

    def host_passes(self, host: HostState, spec: dict[str, Any]) -> bool:
        return host.host in spec["group"]["hosts"]

    def explain(self, removed: int, spec: dict[str, Any]) -> str:
        g = spec["group"]
        return f"{removed} hosts do not hold the members of group {g['name']} (affinity: {', '.join(g['hosts'])})"


class SameHostFilter(BaseFilter):
    """Scheduler hint ``same_host``: a host holding one of the given instances."""

    name = "SameHostFilter"

    def applies(self, spec: dict[str, Any]) -> bool:
        return spec.get("same_host_hosts") is not None

    def host_passes(self, host: HostState, spec: dict[str, Any]) -> bool:
        return host.host in spec["same_host_hosts"]

    def explain(self, removed: int, spec: dict[str, Any]) -> str:
        return f"{removed} hosts hold none of the same_host instances"


class DifferentHostFilter(BaseFilter):
    """Scheduler hint ``different_host``: a host holding none of the given instances."""

    name = "DifferentHostFilter"

    def applies(self, spec: dict[str, Any]) -> bool:
        return bool(spec.get("different_host_hosts"))

    def host_passes(self, host: HostState, spec: dict[str, Any]) -> bool:
        return host.host not in spec["different_host_hosts"]

    def explain(self, removed: int, spec: dict[str, Any]) -> str:
        return f"{removed} hosts hold one of the different_host instances"


class BuildFailureFilter(BaseFilter):
    """Leave out hosts with ``build_failure_threshold`` or more failed builds in ``build_failure_window``."""

    name = "BuildFailureFilter"

    @property
    def threshold(self) -> int:
        return self.conf.scheduler.build_failure_threshold if self.conf is not None else 0

    def applies(self, spec: dict[str, Any]) -> bool:
        return self.threshold > 0 and bool(self.view._failures)

    def host_passes(self, host: HostState, spec: dict[str, Any]) -> bool:
        return self.view.recent_failures(host.host) < self.threshold

    def explain(self, removed: int, spec: dict[str, Any]) -> str:
        return f"{removed} hosts failed {self.threshold}+ builds in the last {self.view.build_failure_window:.0f}s"


ALL_FILTERS: dict[str, type[BaseFilter]] = {
    cls.name: cls
    for cls in (
        ComputeFilter,
        RetryFilter,
        AvailabilityZoneFilter,
        RamFilter,
        CoreFilter,
        DiskFilter,
        AggregateInstanceExtraSpecsFilter,
        ImagePropertiesFilter,
        ServerGroupAntiAffinityFilter,
        ServerGroupAffinityFilter,
        SameHostFilter,
        DifferentHostFilter,
        BuildFailureFilter,
    )
}
FILTERS: list[type[BaseFilter]] = list(ALL_FILTERS.values())


def load_filters(names: list[str], view: HostView, conf: cfg.ConfigOpts | None = None) -> list[BaseFilter]:
    """Instances of the named filters, in order. Raises ``ValueError`` naming an unknown filter."""
    unknown = [n for n in names if n not in ALL_FILTERS]
    if unknown:
        raise ValueError(f"unknown scheduler filter(s) {unknown}; known: {', '.join(ALL_FILTERS)}")
    return [ALL_FILTERS[n](view, conf) for n in names]


def run_filters(
    filters: list[BaseFilter], hosts: list[HostState], spec: dict[str, Any]
) -> tuple[list[HostState], list[str]]:
    """Hosts that pass every filter, and one explanation per filter that removed any."""
    explanations = []
    for f in filters:
        if not f.applies(spec):
            continue
        passed = f.filter_all(hosts, spec)
        removed = len(hosts) - len(passed)
        if removed:
            explanations.append(f"{f.name}: {f.explain(removed, spec)}")
        hosts = passed
        if not hosts:
            break
    return hosts, explanations


# The filters every request runs; ``passing_hosts`` checks them in one pass over the hosts instead of four.
_FUSED = ("ComputeFilter", "RamFilter", "CoreFilter", "DiskFilter")


def passing_hosts(filters: list[BaseFilter], view: HostView, spec: dict[str, Any]) -> tuple[list[HostState], list[str]]:
    """``run_filters`` over every host of ``view`` for the hot path: the same hosts in the same order, with the
    up/RAM/vCPU/disk filters (when all four are enabled) as one vector pass over the view's columns
    (``HostView.fitting``). Explanations are only computed when no host passes (``run_filters`` is run again for
    them): they are only needed for the no-host fault."""
    names = [f.name for f in filters]
    if not all(n in names for n in _FUSED):
        return run_filters(filters, list(view.hosts.values()), spec)
    flavor = spec["flavor"]
    passed = view.fitting(flavor["vcpus"], flavor["ram_mb"], flavor["disk_gb"])
    for f in filters:
        if not passed:
            break
        if f.name not in _FUSED and f.applies(spec):
            passed = f.filter_all(passed, spec)
    if not passed:
        return run_filters(filters, list(view.hosts.values()), spec)
    return passed, []
