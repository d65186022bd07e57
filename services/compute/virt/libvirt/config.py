"""Domain XML from a declarative description, and back: dataclasses in, ElementTree out. Pure functions.

The flavor, image and project of a guest are stored in the domain's ``<metadata>`` under
``METADATA_NS``, so a restarted compute host can account for its guests from libvirt alone.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "METADATA_NS",
    "CdromSpec",
    "DiskSpec",
    "DomainSpec",
    "DomainSummary",
    "GuestMetadata",
    "HostCapabilities",
    "InterfaceSpec",
    "domain_name",
    "parse_capabilities",
    "parse_domain",
    "to_xml",
]

METADATA_NS = "urn:stratus:instance:1"
NAME_PREFIX = "instance-"


def domain_name(instance_id: str) -> str:
    return f"{NAME_PREFIX}{instance_id}"


@dataclass(frozen=True)
class DiskSpec:
    path: str
    format: str = "qcow2"
    target: str = "vda"


@dataclass(frozen=True)
class CdromSpec:
    """A read-only raw image on an IDE cdrom (the config drive): the ``pc`` machine's IDE needs no extra guest
    driver beyond ata_piix, and Debian's cloud kernels have no AHCI for SATA."""

    path: str
    target: str = "hdd"


@dataclass(frozen=True)
class InterfaceSpec:
    mac: str
    bridge: str
    target_dev: str
    mtu: int | None = None


@dataclass(frozen=True)
class GuestMetadata:
    flavor_name: str = ""
    disk_gb: int = 0
    image_id: str = ""
    project_id: str = ""


@dataclass(frozen=True)
class DomainSpec:
    """Everything a Stratus guest's domain XML says. ``virt_type`` is the domain type: kvm, qemu or test."""

    virt_type: str
    uuid: str
    memory_mb: int
    vcpus: int
    disk: DiskSpec
    console_log: str
    interfaces: tuple[InterfaceSpec, ...] = field(default_factory=tuple)
    cdrom: CdromSpec | None = None
    metadata: GuestMetadata = field(default_factory=GuestMetadata)
    arch: str = "x86_64"
    machine: str = "pc"

    @property
    def name(self) -> str:
        return domain_name(self.uuid)


@dataclass(frozen=True)
class DomainSummary:
    """What accounting needs from a domain's XML."""

    uuid: str
    name: str
    vcpus: int
    memory_mb: int
    metadata: GuestMetadata

    @property
    def is_stratus(self) -> bool:
        return self.name.startswith(NAME_PREFIX)


def _sub(parent: ET.Element, tag: str, text: str | None = None, **attrs: str) -> ET.Element:
    el = ET.SubElement(parent, tag, attrs)
    if text is not None:
        el.text = text
    return el


def _metadata(parent: ET.Element, meta: GuestMetadata) -> None:
    ns = f"{{{METADATA_NS}}}"
    inst = _sub(_sub(parent, "metadata"), f"{ns}instance")
    _sub(inst, f"{ns}flavor", name=meta.flavor_name, disk_gb=str(meta.disk_gb))
    _sub(inst, f"{ns}image", id=meta.image_id)
    _sub(inst, f"{ns}project", id=meta.project_id)


def _devices(parent: ET.Element, spec: DomainSpec) -> None:
    devices = _sub(parent, "devices")
    disk = _sub(devices, "disk", type="file", device="disk")
    _sub(disk, "driver", name="qemu", type=spec.disk.format)
    _sub(disk, "source", file=spec.disk.path)
    _sub(disk, "target", dev=spec.disk.target, bus="virtio")
    if spec.cdrom is not None:
        cdrom = _sub(devices, "disk", type="file", device="cdrom")
        _sub(cdrom, "driver", name="qemu", type="raw")
        _sub(cdrom, "source", file=spec.cdrom.path)
        _sub(cdrom, "target", dev=spec.cdrom.target, bus="ide")
        _sub(cdrom, "readonly")
    for nic in spec.interfaces:
        iface = _sub(devices, "interface", type="bridge")
        _sub(iface, "mac", address=nic.mac)
        _sub(iface, "source", bridge=nic.bridge)
        _sub(iface, "target", dev=nic.target_dev)
        _sub(iface, "model", type="virtio")
        if nic.mtu:
            _sub(iface, "mtu", size=str(nic.mtu))
    # The serial port writes to a file that get_console_output reads; <console> makes it the guest console.
    serial = _sub(devices, "serial", type="file")
    _sub(serial, "source", path=spec.console_log, append="off")
    _sub(serial, "target", port="0")
    console = _sub(devices, "console", type="file")
    _sub(console, "source", path=spec.console_log, append="off")
    _sub(console, "target", type="serial", port="0")


def to_xml(spec: DomainSpec) -> str:
    """The domain XML for ``spec`` (BIOS boot from the virtio disk)."""
    ET.register_namespace("stratus", METADATA_NS)
    domain = ET.Element("domain", type=spec.virt_type)
    _sub(domain, "name", spec.name)
    _sub(domain, "uuid", spec.uuid)
    _metadata(domain, spec.metadata)
    _sub(domain, "memory", str(spec.memory_mb), unit="MiB")
    _sub(domain, "vcpu", str(spec.vcpus))
    os_el = _sub(domain, "os")
    _sub(os_el, "type", "hvm", arch=spec.arch, machine=spec.machine)
    _sub(os_el, "boot", dev="hd")
    features = _sub(domain, "features")
    _sub(features, "acpi")  # a clean shutdown is an ACPI power button press
    _sub(features, "apic")
    if spec.virt_type == "kvm":
        _sub(domain, "cpu", mode="host-passthrough")
    _sub(domain, "clock", offset="utc")
    _sub(domain, "on_poweroff", "destroy")
    _sub(domain, "on_reboot", "restart")
    _sub(domain, "on_crash", "destroy")
    _devices(domain, spec)
    ET.indent(domain)
    return ET.tostring(domain, encoding="unicode")


# libvirt's XMLDesc always says KiB; the builder above writes MiB; accept the units libvirt documents.
_KIB_PER_UNIT = {"b": 1 / 1024, "bytes": 1 / 1024, "k": 1, "kib": 1, "m": 1024, "mib": 1024, "g": 2**20, "gib": 2**20}


@dataclass(frozen=True)
class HostCapabilities:
    """What libvirt's capabilities XML says about the host CPU and the x86_64 hvm guests it can run."""

    cpu_info: dict[str, Any]
    emulator: str | None
    kvm_offered: bool


def parse_capabilities(xml: str, arch: str = "x86_64") -> HostCapabilities:
    root = ET.fromstring(xml)
    cpu = root.find("host/cpu")
    topology = cpu.find("topology") if cpu is not None else None
    cpu_info: dict[str, Any] = {
        "arch": root.findtext("host/cpu/arch", ""),
        "model": root.findtext("host/cpu/model", ""),
        "vendor": root.findtext("host/cpu/vendor", ""),
        "topology": {k: int(v) for k, v in (topology.attrib if topology is not None else {}).items() if v.isdigit()},
        "features": sorted(f.get("name", "") for f in root.findall("host/cpu/feature")),
    }
    emulator: str | None = None
    kvm_offered = False
    for guest in root.findall("guest"):
        guest_arch = guest.find("arch")
        if guest.findtext("os_type") != "hvm" or guest_arch is None or guest_arch.get("name") != arch:
            continue
        emulator = emulator or guest_arch.findtext("emulator")
        kvm_offered = kvm_offered or any(d.get("type") == "kvm" for d in guest_arch.findall("domain"))
    return HostCapabilities(cpu_info=cpu_info, emulator=emulator, kvm_offered=kvm_offered)


def parse_domain(xml: str) -> DomainSummary:
    """Name, uuid, size and Stratus metadata of a domain XML (as libvirt's ``XMLDesc`` returns it)."""
    root = ET.fromstring(xml)
    memory = root.find("memory")
    unit = (memory.get("unit") or "KiB").lower() if memory is not None else "kib"
    memory_kib = int(memory.text or 0) * _KIB_PER_UNIT[unit] if memory is not None else 0
    ns = {"s": METADATA_NS}
    flavor = root.find("metadata/s:instance/s:flavor", ns)
    image = root.find("metadata/s:instance/s:image", ns)
    project = root.find("metadata/s:instance/s:project", ns)
    meta = GuestMetadata(
        flavor_name=flavor.get("name", "") if flavor is not None else "",
        disk_gb=int(flavor.get("disk_gb", 0)) if flavor is not None else 0,
        image_id=image.get("id", "") if image is not None else "",
        project_id=project.get("id", "") if project is not None else "",
    )
    return DomainSummary(
        uuid=root.findtext("uuid", ""),
        name=root.findtext("name", ""),
        vcpus=int(root.findtext("vcpu", "0")),
        memory_mb=int(memory_kib // 1024),
        metadata=meta,
    )
