"""The scheduler's in-memory view of every compute host, fed by the ``capacity`` fanout and the DB."""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["HostState", "HostView"]


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
    disabled: bool = False
    last_seen: float = field(default_factory=time.monotonic)

    # Limits exactly as the claim statement computes them (common/db/compute_nodes.py).
    @property
    def vcpus_limit(self) -> float:
        return (self.vcpus - self.reserved_host_cpus) * self.cpu_allocation_ratio

    @property
    def memory_mb_limit(self) -> float:
        return (self.memory_mb - self.reserved_host_memory_mb) * self.ram_allocation_ratio

    @property
    def local_gb_limit(self) -> float:
        return (self.local_gb - self.reserved_host_disk_gb) * self.disk_allocation_ratio

    @property
    def free_vcpus(self) -> float:
        return self.vcpus_limit - self.vcpus_used

    @property
    def free_memory_mb(self) -> float:
        return self.memory_mb_limit - self.memory_mb_used

    @property
    def free_disk_gb(self) -> float:
        return self.local_gb_limit - self.local_gb_used

    def apply(self, data: Mapping[str, Any]) -> None:
        for key, value in data.items():
            if key in _FIELDS and key != "host" and value is not None:
                setattr(self, key, value)


_FIELDS = set(HostState.__dataclass_fields__)


class HostView:
    """Hosts by name. Reports refresh a host; claims this scheduler won update it at once."""

    def __init__(self, service_down_time: float) -> None:
        self.service_down_time = service_down_time
        self.hosts: dict[str, HostState] = {}

    def bootstrap(self, rows: Iterable[Mapping[str, Any]]) -> None:
        """Seed from compute_nodes rows at start; hosts count as seen when their last report was recent."""
        now_wall, now = time.time(), time.monotonic()
        for row in rows:
            state = self._get_or_create(row)
            state.apply(row)
            if row.get("last_report_at") is not None:
                state.last_seen = now - max(0.0, now_wall - row["last_report_at"].timestamp())

    def update(self, report: Mapping[str, Any]) -> HostState:
        state = self._get_or_create(report)
        state.apply(report)
        state.last_seen = time.monotonic()
        return state

    def claimed(self, row: Mapping[str, Any]) -> None:
        """Usage after a claim or release as the DB returned it (the exact state at that moment)."""
        state = self.hosts.get(row["host"])
        if state is not None:
            for key in ("vcpus_used", "memory_mb_used", "local_gb_used"):
                setattr(state, key, row[key])

    def is_up(self, state: HostState) -> bool:
        return time.monotonic() - state.last_seen <= self.service_down_time

    def _get_or_create(self, data: Mapping[str, Any]) -> HostState:
        state = self.hosts.get(data["host"])
        if state is None:
            state = HostState(
                host=data["host"], vcpus=data["vcpus"], memory_mb=data["memory_mb"], local_gb=data["local_gb"]
            )
            self.hosts[data["host"]] = state
        return state
