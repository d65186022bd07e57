"""The libvirt implementation of ``ComputeDriver``.

libvirt-python blocks, so every libvirt call runs on this connection's own small thread pool; waits (for a
clean shutdown) happen on the event loop between short calls, never inside a worker thread. The exception is
``test:///``: that hypervisor lives in this process's memory and a call never blocks (it takes microseconds,
less than the hop to a worker thread and back), so its calls run inline on the event loop.

With a ``test:///`` URI the driver makes every libvirt call for real against libvirt's in-process fake
hypervisor, and skips only what would touch this machine: qemu-img, instance files and bridges
(``self._real_host`` is False). libvirt shares one ``test:///default`` node between all connections of a
process that are open at the same time, so for that URI each driver opens a private node of its own instead
(same capacity as the default one): that is how one process simulates many hosts.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

import libvirt
from oslo_config import cfg

from common.db.instances import PowerState
from common.exceptions import BadRequest, NotFound
from services.compute import paths
from services.compute.exceptions import BridgeUnavailable, VirtError
from services.compute.virt import configdrive, disk
from services.compute.virt.driver import ComputeDriver, Guest, HostCapacity, InstanceInfo
from services.compute.virt.libvirt import config as vconfig
from services.compute.virt.libvirt import probe, vif

__all__ = ["LibvirtDriver"]

LOG = logging.getLogger(__name__)
T = TypeVar("T")

_CAPACITY_TTL = 60.0  # seconds a host's totals are taken as read (host_capacity)
_WORKERS = 4
_POLL_INTERVAL = 0.5
_CONSOLE_TAIL_BYTES = 1024 * 1024

_POWER_STATES = {
    libvirt.VIR_DOMAIN_NOSTATE: PowerState.NOSTATE,
    libvirt.VIR_DOMAIN_RUNNING: PowerState.RUNNING,
    libvirt.VIR_DOMAIN_BLOCKED: PowerState.RUNNING,
    libvirt.VIR_DOMAIN_PAUSED: PowerState.PAUSED,
    libvirt.VIR_DOMAIN_SHUTDOWN: PowerState.SHUTDOWN,
    libvirt.VIR_DOMAIN_SHUTOFF: PowerState.SHUTDOWN,
    libvirt.VIR_DOMAIN_CRASHED: PowerState.CRASHED,
    libvirt.VIR_DOMAIN_PMSUSPENDED: PowerState.SUSPENDED,
}


# What test:///default reports, as a node description libvirt reads once at open (see _open).
_TEST_NODE_XML = """<node>
  <cpu><mhz>1400</mhz><model>i686</model><active>16</active>
    <nodes>2</nodes><sockets>2</sockets><cores>2</cores><threads>2</threads></cpu>
  <memory>3145728</memory>
</node>
"""


def _open(uri: str) -> libvirt.virConnect:
    """Blocking: a connection to ``uri``; for ``test:///default`` a private test node (module docstring)."""
    if uri != "test:///default":
        return libvirt.open(uri)
    with tempfile.NamedTemporaryFile("w", prefix="stratus-test-node-", suffix=".xml") as node:
        node.write(_TEST_NODE_XML)
        node.flush()
        return libvirt.open(f"test://{node.name}")


def _ignore_libvirt_error(_ctx: object, _err: object) -> None:
    """libvirt prints every error to stderr by default; ours are raised and logged where they happen."""


class LibvirtDriver(ComputeDriver):
    """One libvirt connection = one host. Create with ``await LibvirtDriver.create(conf, host)``."""

    def __init__(
        self,
        conf: cfg.ConfigOpts,
        host: str,
        conn: libvirt.virConnect,
        executor: ThreadPoolExecutor,
        virt_type: str,
        caps: vconfig.HostCapabilities,
    ) -> None:
        self.conf = conf
        self.host = host
        self.virt_type = virt_type
        self._conn = conn
        self._executor = executor
        self._caps = caps
        self._instances_path = paths.instances_path(conf)
        # False for test:///: no qemu-img, no instance files, no bridges; every libvirt call still happens (inline:
        # module docstring).
        self._real_host = virt_type != "test"
        # (vcpus, memory MiB, disk GiB) of each Stratus guest by UUID, None for other domains: read from the domain
        # XML once, since a guest's size never changes (capacity reports list every guest after each change).
        self._sizes: dict[str, tuple[int, int, int] | None] = {}
        self._facts: tuple[float, tuple[int, int, int, str, int, str]] | None = None  # host_capacity's

    @classmethod
    async def create(cls, conf: cfg.ConfigOpts, host: str) -> LibvirtDriver:
        """Open ``[compute] connection_uri`` and settle the domain type (probing KVM when ``auto``).

        Raises ``VirtError`` naming the URI when libvirt cannot be reached.
        """
        uri = conf.compute.connection_uri
        libvirt.registerErrorHandler(_ignore_libvirt_error, None)
        executor = ThreadPoolExecutor(max_workers=_WORKERS, thread_name_prefix=f"libvirt-{host}")
        loop = asyncio.get_running_loop()
        try:
            conn = await loop.run_in_executor(executor, _open, uri)
            caps = vconfig.parse_capabilities(await loop.run_in_executor(executor, conn.getCapabilities))
        except libvirt.libvirtError as e:
            executor.shutdown(wait=False)
            raise VirtError(f"cannot connect to libvirt at {uri}: {e.get_error_message() or e}") from e
        virt_type = await cls._decide_virt_type(conf, uri, caps)
        LOG.info("host %s: libvirt %s, domain type %s", host, uri, virt_type)
        return cls(conf, host, conn, executor, virt_type, caps)

    @staticmethod
    async def _decide_virt_type(conf: cfg.ConfigOpts, uri: str, caps: vconfig.HostCapabilities) -> str:
        if uri.startswith("test:"):
            return "test"  # the test driver accepts only domains of type 'test'
        if conf.compute.virt_type != "auto":
            return conf.compute.virt_type
        result = await probe.choose_virt_type(
            emulator=caps.emulator,
            kvm_offered=caps.kvm_offered,
            cache_file=paths.virt_type_cache_file(conf),
            timeout=conf.compute.virt_probe_timeout,
        )
        LOG.info("virt_type auto -> %s (decided in %.2fs): %s", result.virt_type, result.seconds, result.reason)
        return result.virt_type

    async def close(self) -> None:
        if self._conn is None:
            return
        conn, self._conn = self._conn, None
        try:
            await asyncio.get_running_loop().run_in_executor(self._executor, conn.close)
        finally:
            self._executor.shutdown(wait=False)

    # ----- plumbing ---------------------------------------------------------------------------------------------

    async def _run(self, fn: Callable[..., T], *args: object) -> T:
        """Run blocking ``fn(*args)`` on this connection's threads (inline for ``test:///``, which never blocks);
        libvirt errors become ``VirtError``."""
        try:
            if not self._real_host:
                return fn(*args)
            return await asyncio.get_running_loop().run_in_executor(self._executor, functools.partial(fn, *args))
        except libvirt.libvirtError as e:
            raise VirtError(f"libvirt error: {e.get_error_message() or e}") from e

    def _lookup(self, instance_id: str) -> libvirt.virDomain | None:
        """Blocking: the instance's domain, or None when there is none."""
        try:
            return self._conn.lookupByUUIDString(instance_id)
        except libvirt.libvirtError as e:
            if e.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
                return None
            raise

    def _domain(self, instance_id: str) -> libvirt.virDomain:
        """Blocking: the instance's domain; raises ``NotFound`` naming instance and host."""
        dom = self._lookup(instance_id)
        if dom is None:
            raise NotFound(f"instance {instance_id} has no domain on host {self.host}")
        return dom

    def _instance_dir(self, instance_id: str) -> Path:
        try:
            uuid.UUID(instance_id)  # the id becomes a path: never let "../x" through
        except ValueError:
            raise BadRequest(f"instance id {instance_id!r} is not a UUID") from None
        return self._instances_path / instance_id

    def _guest_sizes(self, dom: libvirt.virDomain, uuid: str) -> tuple[int, int, int] | None:
        """Blocking: (vcpus, memory MiB, disk GiB) of a Stratus guest, None for a domain that is not one."""
        if uuid not in self._sizes:
            if dom.name().startswith(vconfig.NAME_PREFIX):
                summary = vconfig.parse_domain(dom.XMLDesc(0))
                self._sizes[uuid] = (summary.vcpus, summary.memory_mb, summary.metadata.disk_gb)
            else:
                self._sizes[uuid] = None
        return self._sizes[uuid]

    def _info(self, dom: libvirt.virDomain) -> InstanceInfo | None:
        """Blocking: ``InstanceInfo`` of ``dom`` (one state call; its size is read once), None if not ours."""
        uuid = dom.UUIDString()
        sizes = self._guest_sizes(dom, uuid)
        if sizes is None:
            return None
        state = _POWER_STATES.get(dom.state()[0], PowerState.NOSTATE)
        return InstanceInfo(uuid, state, *sizes)

    # ----- host -------------------------------------------------------------------------------------------------

    async def host_capacity(self) -> HostCapacity:
        """This host's totals (configured overrides first) and hypervisor. What libvirt says (five calls) is read
        at most once a minute: it only changes with hardware or an upgrade, and every capacity report needs it."""
        c = self.conf.compute
        now = time.monotonic()
        if self._facts is None or now - self._facts[0] > _CAPACITY_TTL:
            info = await self._run(self._conn.getInfo)  # [arch, memory MiB, cpus, mhz, nodes, sockets, cores, ...]
            hv_type, hv_version = await self._run(lambda: (self._conn.getType(), self._conn.getVersion()))
            hostname = await self._run(self._conn.getHostname) if self._real_host else self.host
            fs_gb = await asyncio.to_thread(self._filesystem_gb)
            self._facts = (now, (int(info[2]), int(info[1]), fs_gb, hv_type, int(hv_version), hostname))
        cpus, memory_mb, fs_gb, hv_type, hv_version, hostname = self._facts[1]
        return HostCapacity(
            vcpus=c.vcpus or cpus,
            memory_mb=c.memory_mb or memory_mb,
            local_gb=c.local_gb or fs_gb,
            virt_type=self.virt_type,
            hypervisor_type=hv_type,
            hypervisor_version=hv_version,
            hypervisor_hostname=hostname,
            cpu_info=self._caps.cpu_info,
        )

    def _filesystem_gb(self) -> int:
        """Size of the filesystem that holds (or will hold) the instances directory."""
        path = self._instances_path
        while not path.exists():
            path = path.parent
        st = os.statvfs(path)
        return st.f_blocks * st.f_frsize // disk.GiB

    async def list_instances(self) -> list[InstanceInfo]:
        return await self._run(self._list_instances)

    def _list_instances(self) -> list[InstanceInfo]:
        found = []
        domains = self._conn.listAllDomains()
        for dom in domains:
            try:
                info = self._info(dom)
            except libvirt.libvirtError as e:
                if e.get_error_code() != libvirt.VIR_ERR_NO_DOMAIN:  # undefined while we listed: not ours now
                    raise
                continue
            if info is not None:
                found.append(info)
        if len(self._sizes) > 2 * len(domains) + 64:  # forget undefined domains now and then
            self._sizes = {i.uuid: self._sizes[i.uuid] for i in found}
        return found

    async def get_info(self, instance_id: str) -> InstanceInfo | None:
        def info() -> InstanceInfo | None:
            dom = self._lookup(instance_id)
            return self._info(dom) if dom is not None else None

        return await self._run(info)

    # ----- build ------------------------------------------------------------------------------------------------

    async def create_disk(self, guest: Guest, image: Path) -> None:
        if not self._real_host:
            return
        instance_dir = self._instance_dir(guest.uuid)
        await asyncio.to_thread(instance_dir.mkdir, parents=True, exist_ok=True)
        await disk.create_overlay(image, guest.image_format, instance_dir / "disk", guest.disk_gb)

    async def create_config_drive(self, guest: Guest, files: dict[str, bytes]) -> None:
        if not self._real_host:
            return
        instance_dir = self._instance_dir(guest.uuid)
        await asyncio.to_thread(instance_dir.mkdir, parents=True, exist_ok=True)
        await configdrive.make_iso(instance_dir / configdrive.FILE_NAME, files)

    def _domain_spec(self, guest: Guest) -> vconfig.DomainSpec:
        instance_dir = self._instance_dir(guest.uuid)
        return vconfig.DomainSpec(
            virt_type=self.virt_type,
            uuid=guest.uuid,
            memory_mb=guest.memory_mb,
            vcpus=guest.vcpus,
            disk=vconfig.DiskSpec(path=str(instance_dir / "disk")),
            console_log=str(instance_dir / "console.log"),
            cdrom=vconfig.CdromSpec(path=str(instance_dir / configdrive.FILE_NAME)) if guest.config_drive else None,
            interfaces=tuple(
                vconfig.InterfaceSpec(mac=v.mac, bridge=v.bridge, target_dev=v.tap_name, mtu=v.mtu) for v in guest.vifs
            ),
            metadata=vconfig.GuestMetadata(
                flavor_name=guest.flavor_name,
                disk_gb=guest.disk_gb,
                image_id=guest.image_id,
                project_id=guest.project_id,
            ),
        )

    async def _plug_vifs(self, guest: Guest) -> None:
        for v in guest.vifs:
            if self.conf.compute.create_bridges:
                await vif.ensure_bridge(v.bridge, v.mtu)
            elif not vif.bridge_exists(v.bridge):
                raise BridgeUnavailable(f"bridge {v.bridge!r} of port {v.port_id} does not exist on host {self.host}")

    async def spawn(self, guest: Guest) -> None:
        if self._real_host:
            await self._plug_vifs(guest)
        xml = vconfig.to_xml(self._domain_spec(guest))

        def define_and_start() -> None:
            self._conn.defineXML(xml).create()
            # What reading the XML back would give (``_guest_sizes``): the report that follows needs no parse.
            self._sizes[guest.uuid] = (guest.vcpus, guest.memory_mb, guest.disk_gb)

        await self._run(define_and_start)
        LOG.info("instance %s: domain %s started", guest.uuid, vconfig.domain_name(guest.uuid))

    async def destroy(self, instance_id: str) -> None:
        instance_dir = self._instance_dir(instance_id)

        def stop_and_undefine() -> None:
            dom = self._lookup(instance_id)
            if dom is None:
                return
            if dom.isActive():
                dom.destroy()
            dom.undefine()

        await self._run(stop_and_undefine)
        self._sizes.pop(instance_id, None)
        if self._real_host:
            await asyncio.to_thread(shutil.rmtree, instance_dir, ignore_errors=True)

    # ----- power ------------------------------------------------------------------------------------------------

    async def power_off(self, instance_id: str, timeout: float) -> None:
        dom = await self._run(self._domain, instance_id)
        if not await self._run(dom.isActive):
            return
        if timeout > 0 and await self._clean_shutdown(instance_id, dom, timeout):
            return

        def hard_off() -> None:
            try:
                dom.destroy()
            except libvirt.libvirtError as e:
                if e.get_error_code() != libvirt.VIR_ERR_OPERATION_INVALID:  # it went down by itself meanwhile
                    raise

        await self._run(hard_off)

    async def _clean_shutdown(self, instance_id: str, dom: libvirt.virDomain, timeout: float) -> bool:
        """ACPI power button, then wait up to ``timeout`` s for the guest to go down; True when it did."""
        try:
            await self._run(dom.shutdown)
        except VirtError as e:
            LOG.warning("instance %s: clean shutdown refused (%s); powering off hard", instance_id, e.message)
            return False
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while loop.time() < deadline:
            if not await self._run(dom.isActive):
                return True
            await asyncio.sleep(min(_POLL_INTERVAL, max(deadline - loop.time(), 0)))
        if not await self._run(dom.isActive):
            return True
        LOG.warning("instance %s did not shut down within %.0fs; powering off hard", instance_id, timeout)
        return False

    async def power_on(self, instance_id: str) -> None:
        def start() -> None:
            dom = self._domain(instance_id)
            if not dom.isActive():
                dom.create()

        await self._run(start)

    async def reboot(self, instance_id: str, *, hard: bool, timeout: float) -> None:
        await self.power_off(instance_id, 0 if hard else timeout)
        await self.power_on(instance_id)

    # ----- console ----------------------------------------------------------------------------------------------

    async def get_console_output(self, instance_id: str, length: int | None = None) -> str:
        await self._run(self._domain, instance_id)
        if not self._real_host:
            return (
                f"[{self.host} runs on libvirt's test:/// hypervisor: instance {instance_id} has no serial "
                "console, this line stands in for its output]\n"
            )
        return await asyncio.to_thread(_tail, self._instance_dir(instance_id) / "console.log", length)


def _tail(path: Path, lines: int | None) -> str:
    """The last ``lines`` lines of ``path`` (all, up to 1 MiB, when None); "" when there is no file yet."""
    try:
        with path.open("rb") as f:
            size = f.seek(0, os.SEEK_END)
            f.seek(max(size - _CONSOLE_TAIL_BYTES, 0))
            data = f.read()
    except FileNotFoundError:
        return ""
    text = data.decode(errors="replace")
    if lines is None:
        return text
    if lines <= 0:
        return ""
    return "".join(text.splitlines(keepends=True)[-lines:])
