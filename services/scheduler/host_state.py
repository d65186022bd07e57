"""The scheduler's in-memory view of every compute host, fed by the ``capacity`` fanout and the DB.

Aggregates are folded into each host: metadata (for extra-spec matching), an availability zone that overrides
the host's own, and allocation-ratio overrides that the claim statement applies too (lowest wins).

The view also keeps what every request reads of every host (free vCPUs/RAM/disk, liveness, instance count) as
numpy columns, one row per host (``HostView.columns``): the fit test and the weighers then cost a few vector
operations instead of a Python loop over a thousand hosts. A ``HostState`` marks its row stale whenever one of
those attributes is set, and ``columns()`` rewrites only the stale rows.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from common.db.aggregates import RATIO_KEYS, parse_ratio

__all__ = ["Columns", "FittingHosts", "HostState", "HostView"]

# The attributes the columns are computed from: setting one marks the host's row stale.
_COLUMN_SOURCES = frozenset({
    "vcpus_used", "memory_mb_used", "local_gb_used", "vcpus_limit", "memory_mb_limit", "local_gb_limit",
    "last_seen", "disabled", "running_vms",
})  # fmt: skip


@dataclass
class HostState:
    host: str
    vcpus: int
    memory_mb: int
    local_gb: int
    vcpus_used: int = 0
    memory_mb_used: int = 0
    local_gb_used: int = 0
    running_vms: int = 0
    cpu_allocation_ratio: float = 16.0
    ram_allocation_ratio: float = 1.5
    disk_allocation_ratio: float = 1.0
    reserved_host_memory_mb: int = 0
    reserved_host_disk_gb: int = 0
    reserved_host_cpus: int = 0
    availability_zone: str = "nova"
    virt_type: str = "qemu"
    hypervisor_type: str = "QEMU"
    cpu_info: dict[str, Any] = field(default_factory=dict)
    disabled: bool = False
    last_seen: float = field(default_factory=time.monotonic)
    # From aggregates (HostView.set_aggregates), never from reports.
    aggregate_names: tuple[str, ...] = ()
    aggregate_metadata: dict[str, set[str]] = field(default_factory=dict)
    aggregate_az: str | None = None
    ratio_overrides: dict[str, float] = field(default_factory=dict)

    # Limits exactly as the claim statement computes them (common/db/compute_nodes.py); recomputed whenever a
    # total, reservation, ratio or aggregate changes (``refresh_limits``), read per host per request.
    vcpus_limit: float = field(default=0.0, init=False)
    memory_mb_limit: float = field(default=0.0, init=False)
    local_gb_limit: float = field(default=0.0, init=False)
    # Set by the HostView that holds this host: its row in the view's columns, and the view's stale rows.
    row: int = field(default=-1, init=False, repr=False, compare=False)
    _stale: set[int] | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.refresh_limits()

    def __setattr__(self, name: str, value: Any) -> None:
        object.__setattr__(self, name, value)
        if name in _COLUMN_SOURCES:
            stale = self.__dict__.get("_stale")
            if stale is not None:
                stale.add(self.row)

    def refresh_limits(self) -> None:
        o = self.ratio_overrides
        self.vcpus_limit = (self.vcpus - self.reserved_host_cpus) * o.get(
            "cpu_allocation_ratio", self.cpu_allocation_ratio
        )
        self.memory_mb_limit = (self.memory_mb - self.reserved_host_memory_mb) * o.get(
            "ram_allocation_ratio", self.ram_allocation_ratio
        )
        self.local_gb_limit = (self.local_gb - self.reserved_host_disk_gb) * o.get(
            "disk_allocation_ratio", self.disk_allocation_ratio
        )

    @property
    def free_vcpus(self) -> float:
        return self.vcpus_limit - self.vcpus_used

    @property
    def free_memory_mb(self) -> float:
        return self.memory_mb_limit - self.memory_mb_used

    @property
    def free_disk_gb(self) -> float:
        return self.local_gb_limit - self.local_gb_used

    @property
    def zone(self) -> str:
        """The effective availability zone: an aggregate's overrides the host's configured one."""
        return self.aggregate_az or self.availability_zone

    @property
    def arch(self) -> str:
        return str(self.cpu_info.get("arch") or "")

    def apply(self, data: Mapping[str, Any]) -> None:
        """Take what a report (or a ``compute_nodes`` row) says of the host itself; never usage (see ``_USAGE``)."""
        for key in _REPORTED:
            value = data.get(key)
            if value is not None:
                setattr(self, key, value)
        self.refresh_limits()


_NONE = (0, 0, 0)

# Usage is the claims' (the DB's ``compute_nodes`` row, this scheduler's claims in flight), never a report's: a
# host reports the guests it runs, which leaves out every claim whose build has not reached it yet, so a report
# taken as usage would hand that room out again (the claim statement would refuse it: a lost race per report).
_USAGE = ("vcpus_used", "memory_mb_used", "local_gb_used")

_REPORTED = tuple(
    f
    for f in HostState.__dataclass_fields__
    if f
    not in (
        "host",
        "last_seen",
        "aggregate_names",
        "aggregate_metadata",
        "aggregate_az",
        "ratio_overrides",
        "vcpus_limit",
        "memory_mb_limit",
        "local_gb_limit",
        "row",
        "_stale",
        *_USAGE,
    )
)


@dataclass
class Columns:
    """Per-host values every request reads, row ``HostState.row`` (the view's insertion order); only the first
    ``len(view.hosts)`` rows are hosts."""

    hosts: np.ndarray  # the HostState objects
    free_vcpus: np.ndarray
    free_memory_mb: np.ndarray
    free_disk_gb: np.ndarray
    last_seen: np.ndarray
    disabled: np.ndarray
    running_vms: np.ndarray

    @classmethod
    def empty(cls, size: int) -> Columns:
        return cls(
            np.empty(size, dtype=object), *(np.zeros(size) for _ in range(4)), np.zeros(size, dtype=bool),
            np.zeros(size),
        )  # fmt: skip

    def grown(self, size: int) -> Columns:
        bigger = Columns.empty(size)
        for name, old in vars(self).items():
            getattr(bigger, name)[: len(old)] = old
        return bigger

    def write(self, i: int, h: HostState) -> None:
        self.free_vcpus[i] = h.free_vcpus
        self.free_memory_mb[i] = h.free_memory_mb
        self.free_disk_gb[i] = h.free_disk_gb
        self.last_seen[i] = h.last_seen
        self.disabled[i] = h.disabled
        self.running_vms[i] = h.running_vms


class FittingHosts(list):
    """``HostView.fitting``'s hosts, with their rows in the view's columns (``rows``, in the same order): the
    weighers read the columns at those rows instead of looking each of a thousand hosts' row up again. A filter
    that drops hosts returns a plain list."""

    __slots__ = ("rows",)

    def __init__(self, hosts: list[HostState], rows: np.ndarray) -> None:
        super().__init__(hosts)
        self.rows = rows


class HostView:
    """Hosts by name. Reports refresh a host; claims this scheduler won update it at once."""

    def __init__(self, service_down_time: float, build_failure_window: float = 600.0) -> None:
        self.service_down_time = service_down_time
        self.build_failure_window = build_failure_window
        self.hosts: dict[str, HostState] = {}
        self._aggregates: list[Mapping[str, Any]] = []
        self._failures: dict[str, deque[float]] = {}
        self._pending: dict[str, tuple[int, int, int]] = {}
        self._columns = Columns.empty(64)
        self._stale: set[int] = set()

    def columns(self) -> Columns:
        """The columns with every stale row rewritten (rows of hosts changed since the last call)."""
        if self._stale:
            cols = self._columns
            for i in self._stale:
                cols.write(i, cols.hosts[i])
            self._stale.clear()
        return self._columns

    def fitting(self, vcpus: int, memory_mb: int, disk_gb: int) -> FittingHosts:
        """The hosts (in the view's order) that are up, enabled and have the room: ComputeFilter, CoreFilter,
        RamFilter and DiskFilter in one vector pass."""
        c, n = self.columns(), len(self.hosts)
        ok = c.free_memory_mb[:n] >= memory_mb
        ok &= c.free_vcpus[:n] >= vcpus
        ok &= c.free_disk_gb[:n] >= disk_gb
        ok &= c.last_seen[:n] >= time.monotonic() - self.service_down_time
        ok &= ~c.disabled[:n]
        rows = np.flatnonzero(ok)
        return FittingHosts(c.hosts[rows].tolist(), rows)

    def bootstrap(self, rows: Iterable[Mapping[str, Any]]) -> None:
        """Seed from compute_nodes rows at start (usage included); hosts count as seen when their last report was
        recent."""
        now_wall, now = time.time(), time.monotonic()
        for row in rows:
            state = self._get_or_create(row)
            state.apply(row)
            self.claimed(row)
            if row.get("last_report_at") is not None:
                state.last_seen = now - max(0.0, now_wall - row["last_report_at"].timestamp())
            else:
                state.last_seen = now - self.service_down_time - 1

    def update(self, report: Mapping[str, Any]) -> HostState:
        state = self._get_or_create(report)
        state.apply(report)
        state.last_seen = time.monotonic()
        return state

    def claimed(self, row: Mapping[str, Any]) -> None:
        """Usage as the DB returned it (after a claim, a release, a lost race or a resync), plus the claims this
        scheduler still has in flight on the host (the DB has not counted those yet)."""
        state = self.hosts.get(row["host"])
        if state is not None:
            p = self._pending.get(row["host"], _NONE)
            state.vcpus_used = row["vcpus_used"] + p[0]
            state.memory_mb_used = row["memory_mb_used"] + p[1]
            state.local_gb_used = row["local_gb_used"] + p[2]

    def reserve(self, host: str, vcpus: int, memory_mb: int, disk_gb: int) -> None:
        """Count a claim in flight, so this scheduler's concurrent requests see it. ``settle`` must follow."""
        state = self.hosts.get(host)
        if state is not None:
            p = self._pending.get(host, _NONE)
            self._pending[host] = (p[0] + vcpus, p[1] + memory_mb, p[2] + disk_gb)
            state.vcpus_used += vcpus
            state.memory_mb_used += memory_mb
            state.local_gb_used += disk_gb

    def has_pending(self) -> bool:
        return bool(self._pending)

    def settle(self, host: str, vcpus: int, memory_mb: int, disk_gb: int, row: Mapping[str, Any] | None) -> None:
        """The claim in flight ended: with ``row`` (the DB's usage after it, won or lost) or without."""
        state = self.hosts.get(host)
        if state is None:
            return
        p = self._pending.get(host, _NONE)
        p = (p[0] - vcpus, p[1] - memory_mb, p[2] - disk_gb)
        if p == _NONE:
            self._pending.pop(host, None)
        else:
            self._pending[host] = p
        if row is not None:
            self.claimed(row)
        else:
            state.vcpus_used -= vcpus
            state.memory_mb_used -= memory_mb
            state.local_gb_used -= disk_gb

    def is_up(self, state: HostState) -> bool:
        return time.monotonic() - state.last_seen <= self.service_down_time

    # ----- aggregates ------------------------------------------------------------------------------------------

    def set_aggregates(self, aggregates: Iterable[Mapping[str, Any]]) -> None:
        """Replace what every host knows of its aggregates (rows of ``common.db.aggregates.list_``)."""
        self._aggregates = list(aggregates)
        for state in self.hosts.values():
            self._fold(state)

    def _fold(self, state: HostState) -> None:
        names: list[str] = []
        meta: dict[str, set[str]] = {}
        az = None
        ratios: dict[str, float] = {}
        for agg in self._aggregates:
            if state.host not in agg["hosts"]:
                continue
            names.append(agg["name"])
            az = az or agg["availability_zone"]
            for k, v in (agg["metadata"] or {}).items():
                meta.setdefault(k, set()).add(str(v))
                ratio = parse_ratio(v) if k in RATIO_KEYS else None
                if ratio is not None:  # anything else (not a number, out of bounds) overrides nothing
                    ratios[k] = min(ratios.get(k, float("inf")), ratio)
        state.aggregate_names, state.aggregate_metadata = tuple(names), meta
        state.aggregate_az, state.ratio_overrides = az, ratios
        state.refresh_limits()

    # ----- build failures (from the cause chains of reschedules this scheduler sees) ---------------------------

    def build_failed(self, host: str, at: float | None = None) -> None:
        self._failures.setdefault(host, deque(maxlen=100)).append(time.monotonic() if at is None else at)

    def recent_failures(self, host: str) -> int:
        q = self._failures.get(host)
        if not q:
            return 0
        horizon = time.monotonic() - self.build_failure_window
        while q and q[0] < horizon:
            q.popleft()
        return len(q)

    def _get_or_create(self, data: Mapping[str, Any]) -> HostState:
        state = self.hosts.get(data["host"])
        if state is None:
            state = HostState(
                host=data["host"], vcpus=data["vcpus"], memory_mb=data["memory_mb"], local_gb=data["local_gb"]
            )
            state.row = len(self.hosts)
            self.hosts[data["host"]] = state
            if state.row >= len(self._columns.hosts):
                self._columns = self._columns.grown(2 * len(self._columns.hosts))
            self._columns.hosts[state.row] = state
            state._stale = self._stale
            self._stale.add(state.row)
            self._fold(state)
        return state
