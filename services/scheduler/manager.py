"""The scheduler: filter and weigh hosts from the in-memory view, claim exactly in the DB, cast the build.

Phases of ``build_instances`` (named in events and faults): ``check`` (the instance still wants scheduling),
``filter`` (in memory), ``claim`` (one conditional statement per candidate; a lost race moves on), ``cast``.
Parallel schedulers are safe because the claim is decided by PostgreSQL, never by the in-memory view.
"""

from __future__ import annotations

import logging
import random
import time
from typing import Any

import asyncpg
from oslo_config import cfg

from common import exceptions, objects
from common.context import RequestContext
from common.db import actions, compute_nodes, instances
from common.db.instances import TaskState, VmState
from common.db.pool import Database
from services.compute.rpcapi import ComputeAPI
from services.scheduler.faults import record_build_failure, set_error
from services.scheduler.filters import FILTERS, run_filters
from services.scheduler.host_state import HostView
from services.scheduler.rpcapi import SchedulerAPI
from services.scheduler.weighers import weigh

__all__ = ["SchedulerManager"]

LOG = logging.getLogger(__name__)
EVENT = "scheduler_select_destination"


class SchedulerManager:
    """Endpoint of the ``scheduler`` topic and of the ``capacity`` fanout."""

    def __init__(
        self, conf: cfg.ConfigOpts, db: Database, view: HostView, compute: ComputeAPI, scheduler: SchedulerAPI
    ) -> None:
        self.conf = conf
        self.db = db
        self.view = view
        self.compute = compute
        self.scheduler = scheduler
        self.filters = [cls(view) for cls in FILTERS]
        self.lost_races = 0
        self.decisions = 0
        self._persisted: dict[str, tuple[float, tuple]] = {}

    async def start(self) -> None:
        """Seed the host view from the DB, so a restarted scheduler places at once."""
        rows = await self.db.run(compute_nodes.list_nodes)
        self.view.bootstrap([dict(r) for r in rows])
        LOG.info("host view bootstrapped with %d hosts", len(rows))

    # ----- capacity fanout ---------------------------------------------------------------------------------------

    async def update_capacity(self, ctx: RequestContext, capacity: dict[str, Any]) -> None:
        """A host's report: refresh the view; persist it when it changed or every few report intervals."""
        state = self.view.update(capacity)
        key = tuple(capacity.get(k) for k in ("vcpus", "memory_mb", "local_gb", "running_vms", "broker_node"))
        last = self._persisted.get(state.host)
        now = time.monotonic()
        if last is not None and last[1] == key and now - last[0] < 3 * self.conf.compute.report_interval:
            return
        self._persisted[state.host] = (now, key)

        async def persist(conn: asyncpg.Connection) -> None:
            row = await compute_nodes.upsert_from_report(conn, capacity)
            await compute_nodes.upsert_service(
                conn,
                host=capacity["host"],
                binary="stratus-compute",
                topic=f"compute.{capacity['host']}",
                broker_node=capacity.get("broker_node"),
            )
            self.view.claimed(dict(row))

        await self.db.run(persist)

    # ----- scheduling -------------------------------------------------------------------------------------------

    async def build_instances(self, ctx: RequestContext, request_spec: dict[str, Any]) -> None:
        """Place one instance. Idempotent: a redelivered request for an instance that moved on is dropped."""
        instance_id = request_spec["instance_id"]
        row = await self.db.run(lambda c: instances.get(c, instance_id))
        if row is None or row["task_state"] != TaskState.SCHEDULING or row["vm_state"] != VmState.BUILDING:
            LOG.info("instance %s no longer waits for scheduling; dropping the request", instance_id)
            return
        await self._event(ctx, instance_id, "start")
        allocation = await self.db.run(lambda c: compute_nodes.get_allocation(c, instance_id))
        if allocation is not None:  # redelivered after a claim whose cast may not have gone out
            host = allocation["host"]
        else:
            hosts, explanations = run_filters(self.filters, list(self.view.hosts.values()), request_spec)
            if not hosts:
                await self._no_host(ctx, request_spec, explanations)
                return
            host = await self._claim_first(ctx, request_spec, weigh(hosts, request_spec))
            if host is None:
                await self._no_host(ctx, request_spec, [*explanations, "claims lost to concurrent requests"])
                return
        instance = await self.db.run(lambda c: instances.get(c, instance_id))
        if instance is None:  # deleted meanwhile: give the claim back
            await self.db.run(lambda c: compute_nodes.release(c, instance_id))
            return
        try:
            await self.compute.build_and_run_instance(
                ctx, host, objects.instance_to_wire(instance), request_spec, request_spec.get("attempt", 1)
            )
        except exceptions.StratusError as e:
            # Nobody consumes compute.<host> (service never started there) or the broker refused: that host
            # fails this attempt, the build moves on.
            LOG.warning("cast to compute.%s failed: %s", host, e.message)
            await record_build_failure(
                self.conf, self.db, self.scheduler, ctx,
                instance_id=instance_id, host=host, attempt=request_spec.get("attempt", 1),
                reason=f"compute.{host} unreachable: {e.message}", step="cast",
            )  # fmt: skip
            return
        self.decisions += 1
        await self._event(ctx, instance_id, "Success", f"chose host {host} (attempt {request_spec.get('attempt', 1)})")

    async def _claim_first(self, ctx: RequestContext, spec: dict[str, Any], ranked: list) -> str | None:
        """Claim on a random pick among the best ``host_subset_size``, then the rest in order."""
        k = min(self.conf.scheduler.host_subset_size, len(ranked))
        head = ranked[:k]
        random.shuffle(head)
        flavor = spec["flavor"]
        instance_id = spec["instance_id"]
        for candidate in [*head, *ranked[k:]]:

            async def claim(conn: asyncpg.Connection, host: str = candidate.host) -> asyncpg.Record | None:
                node = await compute_nodes.claim(
                    conn,
                    instance_id=instance_id,
                    host=host,
                    vcpus=flavor["vcpus"],
                    memory_mb=flavor["ram_mb"],
                    disk_gb=flavor["disk_gb"],
                )
                if node is None:
                    return None
                updated = await instances.update(
                    conn,
                    instance_id,
                    {
                        "host": node["host"],
                        "node": node["hypervisor_hostname"],
                        "task_state": TaskState.NETWORKING,
                        "attempt": spec.get("attempt", 1),
                    },
                    expected_task_state=[TaskState.SCHEDULING],
                )
                if updated is None:  # deleted or moved on meanwhile: roll the claim back
                    raise _Abandon()
                return node

            try:
                node = await self.db.run(claim)
            except _Abandon:
                return None
            if node is not None:
                self.view.claimed(dict(node))
                return node["host"]
            self.lost_races += 1
            LOG.info("claim on %s lost for %s; trying the next host", candidate.host, instance_id)
        return None

    async def _no_host(self, ctx: RequestContext, spec: dict[str, Any], explanations: list[str]) -> None:
        flavor = spec["flavor"]
        needs = f"{flavor['vcpus']} vCPU, {flavor['ram_mb']} MiB RAM, {flavor['disk_gb']} GiB disk"
        total = len(self.view.hosts)
        message = f"No valid host was found for {needs} among {total} hosts. " + (
            "; ".join(explanations) if explanations else "No compute host has reported capacity yet."
        )
        failures = spec.get("failures") or []
        if failures:
            message += ". Earlier attempts: " + "; ".join(
                f"attempt {f['attempt']} on {f['host']} failed at {f['step']}: {f['reason']}" for f in failures
            )
        LOG.warning("instance %s: %s", spec["instance_id"], message)
        await set_error(self.db, ctx, spec["instance_id"], message, code=500, host=None)
        await self._event(ctx, spec["instance_id"], "Error", message)

    async def _event(self, ctx: RequestContext, instance_id: str, result: str, details: str | None = None) -> None:
        """An event of this scheduler (its host); which compute host it chose is in ``details``."""
        await self.db.run(
            lambda c: actions.add_event(
                c,
                instance_id=instance_id,
                request_id=ctx.request_id,
                event=EVENT,
                result=result,
                host=self.conf.host,
                details=details,
            )
        )


class _Abandon(Exception):
    """The instance left the scheduling state while we claimed: roll back."""
