"""This host's capacity report (docs/internals.md, "Capacity report").

Built from the hypervisor alone: totals from the driver, usage from the guests it holds (their sizes are in
their domain metadata). A restarted compute therefore reports exactly what it reported before, with no state
of its own to lose. ``*_used`` is informational: the database's claims own the figures placement relies on.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from oslo_config import cfg

from services.compute.virt.driver import ComputeDriver

__all__ = ["ResourceTracker"]


class ResourceTracker:
    def __init__(self, conf: cfg.ConfigOpts, host: str, driver: ComputeDriver) -> None:
        self.conf = conf
        self.host = host
        self.driver = driver

    async def capacity_report(self, broker_node: str | None) -> dict[str, Any]:
        """The report as the ``update_capacity`` fanout carries it, plus this host's allocation ratios and
        reservations (the ``compute_nodes`` columns a conductor stores from it)."""
        c = self.conf.compute
        capacity = await self.driver.host_capacity()
        guests = await self.driver.list_instances()
        return {
            "host": self.host,
            "vcpus": capacity.vcpus,
            "memory_mb": capacity.memory_mb,
            "local_gb": capacity.local_gb,
            "vcpus_used": sum(g.vcpus for g in guests),
            "memory_mb_used": sum(g.memory_mb for g in guests),
            "local_gb_used": sum(g.disk_gb for g in guests),
            "running_vms": len(guests),
            "virt_type": capacity.virt_type,
            "hypervisor_hostname": capacity.hypervisor_hostname,
            "hypervisor_type": capacity.hypervisor_type,
            "hypervisor_version": capacity.hypervisor_version,
            "cpu_info": capacity.cpu_info,
            "availability_zone": c.availability_zone,
            "broker_node": broker_node,
            "reported_at": datetime.now(UTC).isoformat(),
            "cpu_allocation_ratio": c.cpu_allocation_ratio,
            "ram_allocation_ratio": c.ram_allocation_ratio,
            "disk_allocation_ratio": c.disk_allocation_ratio,
            "reserved_host_memory_mb": c.reserved_host_memory_mb,
            "reserved_host_disk_gb": c.reserved_host_disk_gb,
            "reserved_host_cpus": c.reserved_host_cpus,
        }
