"""Host weighers: higher is better. Spreading by free RAM is the default, as in Nova."""

from __future__ import annotations

from typing import Any

from services.scheduler.host_state import HostState

__all__ = ["weigh"]


def weigh(hosts: list[HostState], spec: dict[str, Any]) -> list[HostState]:
    """Hosts best first: most free RAM (normalised), then most free vCPUs, then fewest instances."""
    if not hosts:
        return []
    max_ram = max(h.free_memory_mb for h in hosts) or 1
    max_cpu = max(h.free_vcpus for h in hosts) or 1
    return sorted(
        hosts,
        key=lambda h: (h.free_memory_mb / max_ram + 0.5 * h.free_vcpus / max_cpu, -h.running_vms),
        reverse=True,
    )
