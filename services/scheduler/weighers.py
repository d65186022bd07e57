"""Host weighers: higher is better. Each weigher's raw values are normalised to 0..1 across the candidate
hosts and multiplied by its ``*_weight_multiplier`` (positive spreads, negative packs), as in Nova.

``[scheduler] weighers`` names the enabled ones; a weigher whose multiplier is 0 or that does not apply to a
request (no soft group, no failures) costs nothing.
"""

from __future__ import annotations

from typing import Any, ClassVar

from oslo_config import cfg

from services.scheduler.host_state import HostState, HostView

__all__ = ["ALL_WEIGHERS", "BaseWeigher", "load_weighers", "weigh"]


class BaseWeigher:
    name: ClassVar[str] = "BaseWeigher"
    option: ClassVar[str] = ""
    default_multiplier: ClassVar[float] = 1.0

    def __init__(self, view: HostView, conf: cfg.ConfigOpts | None = None) -> None:
        self.view = view
        self.multiplier = getattr(conf.scheduler, self.option) if conf is not None else self.default_multiplier

    def applies(self, spec: dict[str, Any]) -> bool:
        return self.multiplier != 0

    def raw(self, host: HostState, spec: dict[str, Any]) -> float:
        raise NotImplementedError

    def raw_all(self, hosts: list[HostState], spec: dict[str, Any]) -> list[float]:
        raw = self.raw
        return [raw(h, spec) for h in hosts]


class RAMWeigher(BaseWeigher):
    name, option = "RAMWeigher", "ram_weight_multiplier"

    def raw(self, host: HostState, spec: dict[str, Any]) -> float:
        return host.free_memory_mb

    def raw_all(self, hosts: list[HostState], spec: dict[str, Any]) -> list[float]:
        return [h.memory_mb_limit - h.memory_mb_used for h in hosts]


class CPUWeigher(BaseWeigher):
    name, option = "CPUWeigher", "cpu_weight_multiplier"
    default_multiplier = 0.5

    def raw(self, host: HostState, spec: dict[str, Any]) -> float:
        return host.free_vcpus

    def raw_all(self, hosts: list[HostState], spec: dict[str, Any]) -> list[float]:
        return [h.vcpus_limit - h.vcpus_used for h in hosts]


class DiskWeigher(BaseWeigher):
    name, option = "DiskWeigher", "disk_weight_multiplier"
    default_multiplier = 0.0

    def raw(self, host: HostState, spec: dict[str, Any]) -> float:
        return host.free_disk_gb

    def raw_all(self, hosts: list[HostState], spec: dict[str, Any]) -> list[float]:
        return [h.local_gb_limit - h.local_gb_used for h in hosts]


class NumInstancesWeigher(BaseWeigher):
    """More instances weigh more: a negative multiplier prefers emptier hosts."""

    name, option = "NumInstancesWeigher", "num_instances_weight_multiplier"
    default_multiplier = -0.1

    def raw(self, host: HostState, spec: dict[str, Any]) -> float:
        return host.running_vms

    def raw_all(self, hosts: list[HostState], spec: dict[str, Any]) -> list[float]:
        return [h.running_vms for h in hosts]


def _soft_group(spec: dict[str, Any], policy: str) -> bool:
    group = spec.get("group")
    return bool(group and group["policy"] == policy and group["hosts"])


class ServerGroupSoftAffinityWeigher(BaseWeigher):
    name, option = "ServerGroupSoftAffinityWeigher", "soft_affinity_weight_multiplier"

    def applies(self, spec: dict[str, Any]) -> bool:
        return self.multiplier != 0 and _soft_group(spec, "soft-affinity")

    def raw(self, host: HostState, spec: dict[str, Any]) -> float:
        return spec["group"]["hosts"].get(host.host, 0)


class ServerGroupSoftAntiAffinityWeigher(BaseWeigher):
    name, option = "ServerGroupSoftAntiAffinityWeigher", "soft_anti_affinity_weight_multiplier"

    def applies(self, spec: dict[str, Any]) -> bool:
        return self.multiplier != 0 and _soft_group(spec, "soft-anti-affinity")

    def raw(self, host: HostState, spec: dict[str, Any]) -> float:
        return -spec["group"]["hosts"].get(host.host, 0)


class BuildFailureWeigher(BaseWeigher):
    """Hosts that failed builds recently sink (Nova's default multiplier makes this dominate)."""

    name, option = "BuildFailureWeigher", "build_failure_weight_multiplier"
    default_multiplier = 1000000.0

    def applies(self, spec: dict[str, Any]) -> bool:
        return self.multiplier != 0 and bool(self.view._failures)

    def raw(self, host: HostState, spec: dict[str, Any]) -> float:
        return -self.view.recent_failures(host.host)


ALL_WEIGHERS: dict[str, type[BaseWeigher]] = {
    cls.name: cls
    for cls in (
        RAMWeigher,
        CPUWeigher,
        DiskWeigher,
        NumInstancesWeigher,
        ServerGroupSoftAffinityWeigher,
        ServerGroupSoftAntiAffinityWeigher,
        BuildFailureWeigher,
    )
}


def load_weighers(names: list[str], view: HostView, conf: cfg.ConfigOpts | None = None) -> list[BaseWeigher]:
    unknown = [n for n in names if n not in ALL_WEIGHERS]
    if unknown:
        raise ValueError(f"unknown scheduler weigher(s) {unknown}; known: {', '.join(ALL_WEIGHERS)}")
    return [ALL_WEIGHERS[n](view, conf) for n in names]


def weigh(
    hosts: list[HostState], spec: dict[str, Any], weighers: list[BaseWeigher] | None = None, best: int | None = None
) -> list[HostState]:
    """Hosts best first; with ``best``, only the best ``best`` of them (no full sort). Without ``weighers``:
    every weigher at its default multiplier."""
    if not hosts:
        return []
    if weighers is None:
        weighers = [cls(HostView(0)) for cls in ALL_WEIGHERS.values()]
    # sum(m * (v - lo) / (hi - lo)) ranks hosts as sum(m / (hi - lo) * v) does: the offsets are one constant.
    terms: list[tuple[float, list[float]]] = []
    for w in weighers:
        if not w.applies(spec):
            continue
        values = w.raw_all(hosts, spec)
        lo, hi = min(values), max(values)
        if hi != lo:
            terms.append((w.multiplier / (hi - lo), values))
    if not terms:  # every weigher is flat: the filters' order stands
        return hosts[:best] if best is not None else list(hosts)
    (a, totals), rest = terms[0], terms[1:]
    if len(rest) == 1:
        (b, second), *_ = rest
        totals = [a * x + b * y for x, y in zip(totals, second, strict=True)]
    else:
        totals = [a * x for x in totals]
        for b, values in rest:
            totals = [t + b * v for t, v in zip(totals, values, strict=True)]
    order = sorted(range(len(hosts)), key=totals.__getitem__, reverse=True)
    return [hosts[i] for i in (order if best is None else order[:best])]
