"""The compute manager: the methods of topic ``compute.<host>`` (docs/internals.md), as a plain async class.

It talks to the rest of the cloud only through the two client stubs it is given (``conductor`` for every
state change and event, ``network`` for ports) and to the hypervisor only through its driver; the RPC server
maps messages onto its public coroutines. Every operation on one instance holds that instance's lock, so a
redelivered or concurrent message for the same instance waits and then sees what the first one did.

Casts never raise to their caller: a failure is recorded where users see it (an action event with the
reason, ``build_failed``, or the instance's state) and the message is done.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from datetime import UTC, datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from oslo_config import cfg

from common.context import RequestContext
from common.db.instances import PowerState, TaskState, VmState
from common.exceptions import StratusError
from services.compute import firewall as fw
from services.compute.imagecache import ImageCache
from services.compute.progress import BuildProgress
from services.compute.resource_tracker import ResourceTracker
from services.compute.virt import configdrive
from services.compute.virt.driver import ComputeDriver, Guest, InstanceInfo

if TYPE_CHECKING:
    from services.network.rpcapi import NetworkAPI
    from services.scheduler.rpcapi import ConductorAPI

__all__ = ["BUILD_EVENT", "BuildStep", "ComputeManager"]

LOG = logging.getLogger(__name__)

BUILD_EVENT = "compute_build_and_run_instance"


class BuildStep(StrEnum):
    """The phases of a build, named in action events and in ``build_failed``'s ``step`` and reason."""

    VALIDATE = "validate"  # the message describes a guest, and whether this host already has it is known
    NETWORK = "network"
    IMAGE = "image"
    DISK = "disk"
    CONFIG_DRIVE = "config_drive"  # only for guests that get one (docs/network.md)
    SPAWN = "spawn"


class _BuildStepFailed(Exception):
    def __init__(self, step: BuildStep, reason: str) -> None:
        super().__init__(reason)
        self.step = step
        self.reason = reason


def _describe(exc: BaseException) -> str:
    if isinstance(exc, StratusError):
        return exc.message
    return f"{type(exc).__name__}: {exc}"


class ComputeManager:
    """One compute host's endpoint. The constructor does no I/O; the RPC server dispatches to the methods."""

    def __init__(
        self,
        conf: cfg.ConfigOpts,
        host: str,
        driver: ComputeDriver,
        conductor: ConductorAPI,
        network: NetworkAPI,
        image_cache: ImageCache,
        *,
        broker_node: Callable[[], str | None] = lambda: None,
        firewall: fw.NftFirewall | fw.NoopFirewall | None = None,
    ) -> None:
        self.conf = conf
        self.host = host
        self.driver = driver
        self.conductor = conductor
        self.network = network
        self.image_cache = image_cache
        self.resources = ResourceTracker(conf, host, driver)
        self._broker_node = broker_node
        self.firewall = firewall or fw.for_host(conf.compute.connection_uri, host, str(conf.state_path))
        self._locks: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()
        self.last_report = float("-inf")  # loop time of the last report begun, periodic or after a change
        self._report_due: asyncio.TimerHandle | None = None  # a coalesced report waiting for its turn
        self._background: set[asyncio.Task[None]] = set()

    @contextlib.asynccontextmanager
    async def _instance_lock(self, instance_id: str) -> AsyncIterator[None]:
        lock = self._locks.get(instance_id)
        if lock is None:
            lock = self._locks[instance_id] = asyncio.Lock()
        async with lock:
            yield

    async def _event(
        self, ctx: RequestContext, instance_id: str, event: str, result: str, details: str | None = None
    ) -> None:
        await self.conductor.action_events(
            ctx, instance_id=instance_id, events=[self.conductor.event(event, result, self.host, details)]
        )

    # ----- build ------------------------------------------------------------------------------------------------

    async def build_and_run_instance(
        self, ctx: RequestContext, instance: dict[str, Any], request_spec: dict[str, Any], attempt: int = 1
    ) -> None:
        """Cast. Filter the ports (``request_spec["ports"]``, bound here by the claim), cache the image, make
        the disk, define and start the guest, report it active.

        Idempotent: when this host already has a domain for the instance (a redelivered message) nothing new
        is made; a running one is reported active again, guarded by ``expected_task_state``. On failure
        everything this build made on this host is removed (domain, disk, instance directory) and
        ``conductor.build_failed`` gets the step and a reason naming it and this host; the ports stay with
        the instance for its next attempt.
        """
        instance_id = instance["id"]
        async with self._instance_lock(instance_id):
            try:
                guest = self._validate(instance, request_spec)
                existing = await self._existing_guest(instance_id)
            except _BuildStepFailed as failure:
                await self._build_failed(ctx, instance_id, attempt, failure)
            else:
                if existing is None:
                    await self._build(ctx, instance, request_spec, guest, attempt)
                else:
                    await self._redelivered_build(ctx, instance_id, existing)
        await self._report_quietly(ctx)

    async def _redelivered_build(self, ctx: RequestContext, instance_id: str, existing: InstanceInfo) -> None:
        if existing.power_state != PowerState.RUNNING:
            LOG.warning(
                "instance %s: build redelivered; its guest exists here in power state %s, leaving it alone",
                instance_id,
                existing.power_state.name,
            )
            return
        LOG.info("instance %s: build redelivered; its guest already runs here, reporting it", instance_id)
        await self.conductor.instance_update(
            ctx,
            instance_id=instance_id,
            values=self._active_values(),
            expected_task_state=[TaskState.NETWORKING, TaskState.SPAWNING],
        )

    def _active_values(self) -> dict[str, Any]:
        return {
            "vm_state": VmState.ACTIVE,
            "task_state": None,
            "power_state": PowerState.RUNNING,
            "host": self.host,
            "launched_at": datetime.now(UTC).isoformat(),
        }

    @contextlib.asynccontextmanager
    async def _build_step(self, progress: BuildProgress, step: BuildStep) -> AsyncIterator[None]:
        """One reported phase (event ``compute_build_<step>``): ``start``, then ``Success`` or ``Error`` with the
        reason; the build as a whole is the ``compute_build_and_run_instance`` event around them. The events
        go out with the build's next state change (``BuildProgress``)."""
        event = f"compute_build_{step}"
        progress.event(event, "start")
        try:
            yield
        except Exception as e:  # any failure of a step fails the build; the reason carries what it was
            reason = f"{step} on host {self.host}: {_describe(e)}"
            LOG.warning("instance %s: build failed: %s", progress.instance_id, reason)
            progress.event(event, "Error", reason)
            progress.event(BUILD_EVENT, "Error", reason)
            raise _BuildStepFailed(step, reason) from e
        progress.event(event, "Success")

    async def _build(
        self,
        ctx: RequestContext,
        instance: dict[str, Any],
        request_spec: dict[str, Any],
        guest: Guest,
        attempt: int,
    ) -> None:
        instance_id = instance["id"]
        progress = BuildProgress(
            self.conductor, ctx, instance_id, self.host, self.conf.compute.progress_interval, self._spawn
        )
        progress.event(BUILD_EVENT, "start")
        try:
            async with self._build_step(progress, BuildStep.NETWORK):
                # The ports were made with the instance and bound to this host by the claim (request_spec):
                # anti-spoofing and security groups are in place before the guest sends its first frame. A port
                # the firewall refused (values nft cannot take) drops everything: the build stops here.
                refused = await self.sync_firewall(ctx)
                fw.raise_if_refused(refused, [p["id"] for p in request_spec["ports"]])
            # Guarded: casts may be applied out of order, and this one must never undo ACTIVE.
            progress.update({"task_state": TaskState.SPAWNING}, [TaskState.NETWORKING])
            async with self._build_step(progress, BuildStep.IMAGE):
                image_path = await self.image_cache.fetch(request_spec["image"])
            async with self._build_step(progress, BuildStep.DISK):
                await self.driver.create_disk(guest, image_path)
            if configdrive.required(instance, self.conf.compute.force_config_drive):
                async with self._build_step(progress, BuildStep.CONFIG_DRIVE):
                    files = configdrive.drive_files(instance, request_spec["ports"], self.conf.network.dns_domain)
                    guest = dataclasses.replace(guest, config_drive=True)
                    await self.driver.create_config_drive(guest, files)
            async with self._build_step(progress, BuildStep.SPAWN):
                await self.driver.spawn(guest)
        except _BuildStepFailed as failure:
            await self._undo_build(instance_id)
            await self._build_failed(ctx, instance_id, attempt, failure, progress.take_events())
            return
        LOG.info("instance %s: built and running on %s", instance_id, self.host)
        values = self._active_values()
        if guest.config_drive:
            values["config_drive"] = True  # also when this host forced it: server show says the guest has one
        await progress.finish(
            values,
            [TaskState.NETWORKING, TaskState.SPAWNING],
            event=self.conductor.event(BUILD_EVENT, "Success", self.host),
        )

    async def _build_failed(
        self,
        ctx: RequestContext,
        instance_id: str,
        attempt: int,
        failure: _BuildStepFailed,
        events: list[dict[str, Any]] | None = None,
    ) -> None:
        await self.conductor.build_failed(
            ctx,
            instance_id=instance_id,
            host=self.host,
            attempt=attempt,
            reason=failure.reason,
            step=str(failure.step),
            events=events,
        )

    def _validate(self, instance: dict[str, Any], request_spec: dict[str, Any]) -> Guest:
        """The guest this message asks for, with its ports; ``_BuildStepFailed`` when it is malformed."""
        try:
            return Guest.from_request(instance, request_spec, request_spec["ports"])
        except (KeyError, TypeError, ValueError) as e:
            reason = f"{BuildStep.VALIDATE} on host {self.host}: malformed request ({type(e).__name__}: {e})"
            raise _BuildStepFailed(BuildStep.VALIDATE, reason) from e

    async def _existing_guest(self, instance_id: str) -> InstanceInfo | None:
        """This host's guest for the instance, if a previous delivery of the build made one."""
        try:
            return await self.driver.get_info(instance_id)
        except StratusError as e:
            reason = f"{BuildStep.VALIDATE} on host {self.host}: cannot tell whether the guest exists ({e.message})"
            raise _BuildStepFailed(BuildStep.VALIDATE, reason) from e

    async def _undo_build(self, instance_id: str) -> None:
        """Remove what a failed build made on this host (guest, disk, directory). Never raises: the build's own
        failure is what gets reported. The ports stay: they belong to the instance until it is deleted, and a
        reschedule binds them to the next host."""
        try:
            await self.driver.destroy(instance_id)
        except Exception:
            LOG.exception("instance %s: cleaning up the guest of a failed build failed", instance_id)

    # ----- terminate --------------------------------------------------------------------------------------------

    async def terminate_instance(self, ctx: RequestContext, instance: dict[str, Any]) -> None:
        """Cast. Destroy the guest and its disk, release its ports, then ``instance_deleted``. Idempotent.

        On failure the instance goes to ``error`` (no task) with an ``Error`` event saying why; deleting it
        again retries.
        """
        instance_id = instance["id"]
        event = "compute_terminate_instance"
        async with self._instance_lock(instance_id):
            await self._event(ctx, instance_id, event, "start")
            try:
                await self.driver.destroy(instance_id)
                await self.network.deallocate_for_instance(ctx, instance_id=instance_id)
                await self._sync_firewall_quietly(ctx)
            except Exception as e:  # recorded on the instance; the user retries the delete
                reason = f"terminate on host {self.host}: {_describe(e)}"
                LOG.warning("instance %s: %s", instance_id, reason)
                await self._event(ctx, instance_id, event, "Error", reason)
                await self.conductor.instance_update(
                    ctx, instance_id=instance_id, values={"vm_state": VmState.ERROR, "task_state": None}
                )
            else:
                await self._event(ctx, instance_id, event, "Success")
                await self.conductor.instance_deleted(ctx, instance_id=instance_id, host=self.host)
        await self._report_quietly(ctx)

    # ----- power ------------------------------------------------------------------------------------------------

    async def stop_instance(self, ctx: RequestContext, instance: dict[str, Any]) -> None:
        """Cast. Clean shutdown within ``[compute] shutdown_timeout``, else hard; then ``stopped``."""
        await self._power_action(
            ctx,
            instance,
            "compute_stop_instance",
            lambda instance_id: self.driver.power_off(instance_id, self.conf.compute.shutdown_timeout),
            vm_state=VmState.STOPPED,
            expected=[TaskState.POWERING_OFF],
        )

    async def start_instance(self, ctx: RequestContext, instance: dict[str, Any]) -> None:
        """Cast. Start the guest; then ``active``."""
        await self._power_action(
            ctx,
            instance,
            "compute_start_instance",
            self.driver.power_on,
            vm_state=VmState.ACTIVE,
            expected=[TaskState.POWERING_ON],
        )

    async def reboot_instance(self, ctx: RequestContext, instance: dict[str, Any], reboot_type: str = "SOFT") -> None:
        """Cast. SOFT: clean shutdown (hard after ``shutdown_timeout``) and start; HARD: power cycle."""
        hard = reboot_type.upper() == "HARD"
        await self._power_action(
            ctx,
            instance,
            "compute_reboot_instance",
            lambda instance_id: self.driver.reboot(instance_id, hard=hard, timeout=self.conf.compute.shutdown_timeout),
            vm_state=VmState.ACTIVE,
            expected=[TaskState.REBOOTING, TaskState.REBOOTING_HARD],
        )

    async def _power_action(
        self,
        ctx: RequestContext,
        instance: dict[str, Any],
        event: str,
        action: Callable[[str], Awaitable[None]],
        *,
        vm_state: VmState,
        expected: list[TaskState],
    ) -> None:
        """Run ``action``, then report the power state the hypervisor shows, guarded by ``expected``.

        On failure the task is cleared (the vm_state stays) and an ``Error`` event says why.
        """
        instance_id = instance["id"]
        async with self._instance_lock(instance_id):
            await self._event(ctx, instance_id, event, "start")
            values: dict[str, Any] = {"task_state": None}
            try:
                await action(instance_id)
            except StratusError as e:
                reason = f"{event} on host {self.host}: {_describe(e)}"
                LOG.warning("instance %s: %s", instance_id, reason)
                outcome = {"event": event, "result": "Error", "host": self.host, "details": reason}
            else:
                outcome = {"event": event, "result": "Success", "host": self.host}
                values["vm_state"] = vm_state
            info = await self.driver.get_info(instance_id)
            values["power_state"] = info.power_state if info is not None else PowerState.NOSTATE
            await self.conductor.instance_update(
                ctx, instance_id=instance_id, values=values, expected_task_state=list(expected), event=outcome
            )
        await self._report_quietly(ctx)

    # ----- console ----------------------------------------------------------------------------------------------

    async def get_console_output(self, ctx: RequestContext, instance: dict[str, Any], length: int | None = None) -> str:
        """Call. The guest's serial console, last ``length`` lines; ``NotFound`` when it is not on this host."""
        return await self.driver.get_console_output(instance["id"], int(length) if length is not None else None)

    # ----- capacity ---------------------------------------------------------------------------------------------

    async def report_capacity(self, ctx: RequestContext | None = None) -> dict[str, Any]:
        """Publish this host's capacity to every scheduler and return it. Safe to call any time (it is also
        dispatchable, as "report now"); may raise when the broker does not take the report."""
        # The periodic report also heals the firewall: rebuilt after a restart, group members refreshed.
        self.last_report = asyncio.get_running_loop().time()
        await self._sync_firewall_quietly(ctx or RequestContext.admin())
        report = await self.resources.capacity_report(self._broker_node())
        await self.conductor.report_capacity(ctx or RequestContext.admin(), capacity=report)
        return report

    async def sync_firewall(self, ctx: RequestContext) -> dict[str, str]:
        """Make this host's nftables rules match the network service's view of its ports. Idempotent; may raise.

        Returns the ports the firewall refused (port id → the bad field and value, or nft's complaint): each
        drops all its traffic while the others' rules apply (``NftFirewall.apply``, which logs them). A no-op
        (and no RPC) where the driver has no real guest traffic (``test:///``).
        """
        if not self.firewall.enabled:
            return {}
        return await self.firewall.apply(await self.network.get_host_ports(ctx, host=self.host))

    async def _sync_firewall_quietly(self, ctx: RequestContext) -> None:
        """For paths where stale rules are harmless until the next periodic sync (a deleted port's tap is gone)."""
        try:
            await self.sync_firewall(ctx)
        except Exception as e:
            LOG.warning("firewall refresh of %s failed (the next report retries): %s", self.host, e)

    async def get_firewall_counters(self, ctx: RequestContext) -> dict[str, dict[str, int]]:
        """Call. Packets counted by each drop rule, per port chain: ``{chain: {reason: packets}}`` (diagnosis)."""
        return await self.firewall.counters()

    async def _report_quietly(self, ctx: RequestContext) -> None:
        """Report after a change: at once, unless a report went out less than ``min_report_interval`` ago; then
        one report at the end of that interval covers every change until then. A lost report is healed by the
        next periodic one, so failures only log."""
        if self._report_due is not None:
            return  # the report already due will include this change
        loop = asyncio.get_running_loop()
        wait = self.last_report + self.conf.compute.min_report_interval - loop.time()
        if wait <= 0:
            await self._report_now(ctx)
            return

        def due() -> None:
            self._report_due = None
            self._spawn(self._report_now(RequestContext.admin()))

        self._report_due = loop.call_later(wait, due)

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        """Run ``coro`` in the background, referenced until it ends (the loop holds tasks weakly); ``close``
        cancels what is still running."""
        task = asyncio.get_running_loop().create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _report_now(self, ctx: RequestContext) -> None:
        try:
            await self.report_capacity(ctx)
        except Exception as e:
            LOG.warning("capacity report of %s failed (the periodic one will follow): %s", self.host, e)

    async def close(self) -> None:
        """Drop a coalesced report still waiting and background work still running (timed build-progress
        flushes, delayed reports): the service is stopping."""
        if self._report_due is not None:
            self._report_due.cancel()
            self._report_due = None
        for task in self._background:
            task.cancel()
