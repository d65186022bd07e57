"""The hypervisor interface the compute manager programs against, and the values that cross it.

A driver owns the guests of one host: their disks, their domains and the host side of their network ports.
Every method is a coroutine; implementations keep blocking work (libvirt, qemu-img, files) off the event loop.
The manager never sees driver internals: it asks with a ``Guest`` or an instance id and gets typed answers.
"""

from __future__ import annotations

import abc
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from common.db.instances import PowerState

__all__ = ["ComputeDriver", "Guest", "HostCapacity", "InstanceInfo", "Vif"]


@dataclass(frozen=True)
class Vif:
    """The host side of one port: the tap device plugged into ``bridge``."""

    port_id: str
    mac: str
    bridge: str
    mtu: int | None = None

    @property
    def tap_name(self) -> str:
        # IFNAMSIZ is 16 with the NUL: "tap" + 11 characters of the port id fits, as in Neutron.
        return f"tap{self.port_id[:11]}"

    @classmethod
    def from_port(cls, port: dict[str, Any]) -> Vif:
        """From a port dict (``request_spec["ports"]``, see ``common.db.networks.port_info``)."""
        return cls(port_id=port["id"], mac=port["mac_address"], bridge=port["bridge"], mtu=port.get("mtu"))


@dataclass(frozen=True)
class Guest:
    """What the manager asks a driver to run: one instance's resources, image and ports."""

    uuid: str
    vcpus: int
    memory_mb: int
    disk_gb: int
    flavor_name: str = ""
    image_id: str = ""
    image_format: str = "qcow2"
    project_id: str = ""
    vifs: tuple[Vif, ...] = field(default_factory=tuple)
    config_drive: bool = False  # a config-2 cdrom (``create_config_drive``) is attached

    @classmethod
    def from_request(cls, instance: dict[str, Any], request_spec: dict[str, Any], ports: list[dict[str, Any]]) -> Guest:
        """From a ``build_and_run_instance`` message (docs/internals.md) and the ports allocated for it.

        Raises ``KeyError``, ``TypeError`` or ``ValueError`` when the message lacks what a guest needs.
        """
        flavor = request_spec["flavor"]
        image = request_spec["image"]
        uuid.UUID(instance["id"])  # the id names files and domains: nothing but a UUID (ValueError otherwise)
        return cls(
            uuid=instance["id"],
            vcpus=int(flavor["vcpus"]),
            memory_mb=int(flavor["ram_mb"]),
            disk_gb=int(flavor.get("disk_gb") or 0),
            flavor_name=flavor.get("name") or "",
            image_id=image["id"],
            image_format=image.get("disk_format") or "qcow2",
            project_id=instance.get("project_id") or "",
            vifs=tuple(Vif.from_port(p) for p in ports),
        )


@dataclass(frozen=True)
class InstanceInfo:
    """A guest as the hypervisor sees it now; sizes come from the metadata the driver stored at spawn."""

    uuid: str
    power_state: PowerState
    vcpus: int
    memory_mb: int
    disk_gb: int


@dataclass(frozen=True)
class HostCapacity:
    """Totals of this host (after configured overrides) and what kind of hypervisor it runs."""

    vcpus: int
    memory_mb: int
    local_gb: int
    virt_type: str
    hypervisor_type: str
    hypervisor_version: int
    hypervisor_hostname: str
    cpu_info: dict[str, Any]


class ComputeDriver(abc.ABC):
    """One host's hypervisor. Create with the implementation's async factory; ``close()`` when done.

    Contracts shared by every implementation:
    - ``destroy`` is idempotent: a missing guest, disk or directory is success.
    - Power operations on a guest already in the wanted state succeed without doing anything.
    - Methods that act on one existing guest raise ``common.exceptions.NotFound`` when it is not on this host.
    """

    virt_type: str

    @abc.abstractmethod
    async def close(self) -> None:
        """Release the hypervisor connection and worker threads. Idempotent."""

    @abc.abstractmethod
    async def host_capacity(self) -> HostCapacity: ...

    @abc.abstractmethod
    async def list_instances(self) -> list[InstanceInfo]:
        """Every Stratus guest defined on this host, running or not (other domains are ignored)."""

    @abc.abstractmethod
    async def get_info(self, instance_id: str) -> InstanceInfo | None:
        """The guest, or None when this host has no domain for ``instance_id``."""

    @abc.abstractmethod
    async def create_disk(self, guest: Guest, image: Path) -> None:
        """Make the guest's root disk on top of the cached ``image``; raises ``DiskError``.

        On failure it may leave the instance directory behind; ``destroy`` removes it.
        """

    @abc.abstractmethod
    async def create_config_drive(self, guest: Guest, files: dict[str, bytes]) -> None:
        """Make the guest's config drive holding ``files`` (path → content); ``spawn`` attaches it when
        ``guest.config_drive``. Idempotent; raises ``DiskError``. ``destroy`` removes it."""

    @abc.abstractmethod
    async def spawn(self, guest: Guest) -> None:
        """Plug the ports, define the guest persistently and start it; raises ``BridgeUnavailable`` or
        ``VirtError``. On failure the domain may stay defined; ``destroy`` removes it."""

    @abc.abstractmethod
    async def destroy(self, instance_id: str) -> None:
        """Power off, undefine, delete the instance directory. Idempotent."""

    @abc.abstractmethod
    async def power_off(self, instance_id: str, timeout: float) -> None:
        """Shut down cleanly within ``timeout`` seconds, else power off hard."""

    @abc.abstractmethod
    async def power_on(self, instance_id: str) -> None: ...

    @abc.abstractmethod
    async def reboot(self, instance_id: str, *, hard: bool, timeout: float) -> None:
        """Soft: clean shutdown within ``timeout`` then start, falling back to hard. Hard: power cycle."""

    @abc.abstractmethod
    async def get_console_output(self, instance_id: str, length: int | None = None) -> str:
        """The last ``length`` lines of the serial console (all kept lines when None)."""
