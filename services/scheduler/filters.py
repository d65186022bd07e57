"""Host filters: small classes, each able to say how many hosts it removed and why."""

from __future__ import annotations

from typing import Any

from services.scheduler.host_state import HostState, HostView

__all__ = ["FILTERS", "BaseFilter", "run_filters"]


class BaseFilter:
    name = "BaseFilter"

    def __init__(self, view: HostView) -> None:
        self.view = view

    def host_passes(self, host: HostState, spec: dict[str, Any]) -> bool:
        raise NotImplementedError

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

    def host_passes(self, host: HostState, spec: dict[str, Any]) -> bool:
        return host.host not in spec.get("excluded_hosts", ())

    def explain(self, removed: int, spec: dict[str, Any]) -> str:
        return f"{removed} hosts already failed this build"


class AvailabilityZoneFilter(BaseFilter):
    name = "AvailabilityZoneFilter"

    def host_passes(self, host: HostState, spec: dict[str, Any]) -> bool:
        az = spec.get("availability_zone")
        return not az or host.availability_zone == az

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


FILTERS: list[type[BaseFilter]] = [
    ComputeFilter,
    RetryFilter,
    AvailabilityZoneFilter,
    RamFilter,
    CoreFilter,
    DiskFilter,
]


def run_filters(
    filters: list[BaseFilter], hosts: list[HostState], spec: dict[str, Any]
) -> tuple[list[HostState], list[str]]:
    """Hosts that pass every filter, and one explanation per filter that removed any."""
    explanations = []
    for f in filters:
        passed = [h for h in hosts if f.host_passes(h, spec)]
        removed = len(hosts) - len(passed)
        if removed:
            explanations.append(f"{f.name}: {f.explain(removed, spec)}")
        hosts = passed
        if not hosts:
            break
    return hosts, explanations
