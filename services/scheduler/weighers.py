"""Host weighers: higher is better. Each weigher's raw values are normalised to 0..1 across the candidate
hosts and multiplied by its ``*_weight_multiplier`` (positive spreads, negative packs), as in Nova.

``[scheduler] weighers`` names the enabled ones; a weigher whose multiplier is 0 or that does not apply to a
request (no soft group, no failures) costs nothing.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
from oslo_config import cfg

from services.scheduler.host_state import Columns, FittingHosts, HostState, HostView

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

    def column(self, cols: Columns, rows: np.ndarray) -> np.ndarray | None:
        """The raw values of the hosts in ``rows`` straight from the view's columns; None when this weigher's
        values are not a column (they then come from ``raw_all``)."""
        return None


class RAMWeigher(BaseWeigher):
    name, option = "RAMWeigher", "ram_weight_multiplier"

    def raw(self, host: HostState, spec: dict[str, Any]) -> float:
        return host.free_memory_mb

    def column(self, cols: Columns, rows: np.ndarray) -> np.ndarray:
        return cols.free_memory_mb[rows]


class CPUWeigher(BaseWeigher):
    name, option = "CPUWeigher", "cpu_weight_multiplier"
    default_multiplier = 0.5

    def raw(self, host: HostState, spec: dict[str, Any]) -> float:
        return host.free_vcpus

    def column(self, cols: Columns, rows: np.ndarray) -> np.ndarray:
        return cols.free_vcpus[rows]


class DiskWeigher(BaseWeigher):
    name, option = "DiskWeigher", "disk_weight_multiplier"
    default_multiplier = 0.0

    def raw(self, host: HostState, spec: dict[str, Any]) -> float:
        return host.free_disk_gb

    def column(self, cols: Columns, rows: np.ndarray) -> np.ndarray:
        return cols.free_disk_gb[rows]


class NumInstancesWeigher(BaseWeigher):
    """More instances weigh more: a negative multiplier prefers emptier hosts."""

    name, option = "NumInstancesWeigher", "num_instances_weight_multiplier"
    default_multiplier = -0.1

    def raw(self, host: HostState, spec: dict[str, Any]) -> float:
        return host.running_vms

    def column(self, cols: Columns, rows: np.ndarray) -> np.ndarray:
        return cols.running_vms[rows]


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
    # The view's columns give the values of the simple weighers when the hosts are the view's own.
    view = weighers[0].view if weighers else None
    cols: Columns | None = None
    rows = np.empty(0, dtype=np.intp)
    if view is not None and all(view.hosts.get(h.host) is h for h in (hosts[0], hosts[-1])):
        cols = view.columns()
        if isinstance(hosts, FittingHosts):  # the fit test's hosts come with their rows
            rows = hosts.rows
        else:
            rows = np.fromiter((h.row for h in hosts), dtype=np.intp, count=len(hosts))
    # sum(m * (v - lo) / (hi - lo)) ranks hosts as sum(m / (hi - lo) * v) does: the offsets are one constant.
    terms: list[tuple[float, np.ndarray]] = []
    for w in weighers:
        if not w.applies(spec):
            continue
        values = w.column(cols, rows) if cols is not None else None
        if values is None:
            values = np.asarray(w.raw_all(hosts, spec), dtype=float)
        lo, hi = values.min(), values.max()
        if hi != lo:
            terms.append((w.multiplier / (hi - lo), values))
    if not terms:  # every weigher is flat: the filters' order stands
        return hosts[:best] if best is not None else list(hosts)
    (a, values), *rest = terms
    totals = a * values
    for b, values in rest:
        totals = totals + b * values
    # Best first; equal totals keep the filters' order (a stable sort). With ``best``, only the hosts at or above
    # the best-th total are sorted.
    neg = -totals
    if best is None or best >= len(hosts):
        order = np.argsort(neg, kind="stable")
    else:
        top = np.flatnonzero(neg <= np.partition(neg, best - 1)[best - 1])
        order = top[np.argsort(neg[top], kind="stable")][:best]
    return [hosts[i] for i in order.tolist()]
