"""Fakes for the two RPC stubs the compute manager talks through (they stand in for the conductor and network
services), and the build message the scheduler would cast. Shared by the unit and functional compute tests."""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from common.context import RequestContext
from services.scheduler.rpcapi import ConductorAPI

HOST = "cmp-a"


@dataclass
class ImageFile:
    path: Path
    data: bytes

    @property
    def url(self) -> str:
        return self.path.as_uri()

    def image(self, **overrides: Any) -> dict[str, Any]:
        """An image dict as the request spec carries it, with a correct sha256 unless overridden."""
        return {
            "id": str(uuid.uuid4()),
            "location": self.url,
            "disk_format": "qcow2",
            "size": len(self.data),
            "checksum": hashlib.md5(self.data).hexdigest(),
            "os_hash_algo": "sha256",
            "os_hash_value": hashlib.sha256(self.data).hexdigest(),
            **overrides,
        }


@dataclass
class FakeConductor:
    """Stands in for ``ConductorAPI``: records each cast as (method, kwargs)."""

    calls: list[tuple[str, dict[str, Any]]] = field(default_factory=list)

    def named(self, method: str) -> list[dict[str, Any]]:
        return [kw for m, kw in self.calls if m == method]

    async def instance_update(self, ctx: RequestContext, **kw: Any) -> None:
        self.calls.append(("instance_update", kw))

    event = staticmethod(ConductorAPI.event)

    async def action_events(self, ctx: RequestContext, **kw: Any) -> None:
        self.calls.append(("action_events", kw))

    async def build_failed(self, ctx: RequestContext, **kw: Any) -> None:
        self.calls.append(("build_failed", kw))

    async def instance_deleted(self, ctx: RequestContext, **kw: Any) -> None:
        self.calls.append(("instance_deleted", kw))

    async def report_capacity(self, ctx: RequestContext, **kw: Any) -> None:
        self.calls.append(("report_capacity", kw))


@dataclass
class FakeNetwork:
    """Stands in for ``NetworkAPI``: records each call; nothing to release, no firewall view."""

    calls: list[tuple[str, dict[str, Any]]] = field(default_factory=list)

    def named(self, method: str) -> list[dict[str, Any]]:
        return [kw for m, kw in self.calls if m == method]

    async def deallocate_for_instance(self, ctx: RequestContext, **kw: Any) -> dict[str, list[str]]:
        self.calls.append(("deallocate_for_instance", kw))
        return {"deleted": [], "unbound": []}

    async def get_host_ports(self, ctx: RequestContext, **kw: Any) -> list[dict[str, Any]]:
        """No firewall view: these tests exercise the driver and the manager, not per-port rules."""
        self.calls.append(("get_host_ports", kw))
        return []


def build_request(
    image: dict[str, Any],
    *,
    vcpus: int = 1,
    ram_mb: int = 128,
    disk_gb: int = 1,
    nets: int = 1,
    mac: str | None = None,
    bridge: str | None = None,
):
    """(instance, request_spec) as the scheduler casts them: one port per network (as the API made them), on
    bridge ``bridge`` or ``brq<net id[:11]>``, with MAC ``mac`` (e.g. an invalid one) or a valid one."""
    instance_id = str(uuid.uuid4())
    flavor = {"id": "f1", "name": "m1.tiny", "vcpus": vcpus, "ram_mb": ram_mb, "disk_gb": disk_gb, "extra_specs": {}}
    networks = [{"uuid": str(uuid.uuid4())} for _ in range(nets)]
    ports = [
        {
            "id": str(uuid.uuid4()),
            "network_id": net["uuid"],
            "mac_address": mac or f"fa:16:3e:00:00:{i:02x}",
            "fixed_ips": [{"subnet_id": "s", "ip_address": f"10.0.0.{10 + i}"}],
            "bridge": bridge or f"brq{net['uuid'][:11]}",
            "mtu": 1450,
            "cidr": "10.0.0.0/24",
            "gateway_ip": "10.0.0.1",
            "dns_name": "vm-1",
            "dns_domain": "",
        }
        for i, net in enumerate(networks)
    ]
    instance = {
        "id": instance_id,
        "project_id": "p1",
        "user_id": "u1",
        "hostname": "vm-1",
        "vm_state": "building",
        "task_state": "scheduling",
        "flavor": flavor,
        "image": image,
        "requested_networks": networks,
    }
    spec = {
        "instance_id": instance_id,
        "project_id": "p1",
        "flavor": flavor,
        "image": image,
        "networks": networks,
        "ports": ports,
        "attempt": 1,
        "excluded_hosts": [],
        "failures": [],
    }
    return instance, spec
