"""The scheduler: filter and weigh hosts from the in-memory view, claim exactly in the DB, cast the build.

Phases of ``build_instances`` (named in events and faults): ``prepare`` (the instance still wants scheduling;
its group and hints are read), ``filter`` and ``weigh`` (in memory), ``claim`` (one conditional statement per
candidate, plus the group guard; a lost race moves on), ``cast``. Parallel schedulers are safe because the
claim is decided by PostgreSQL, never by the in-memory view.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
from oslo_config import cfg

from common import exceptions, objects
from common.context import RequestContext
from common.db import aggregates, compute_nodes, instances, server_groups
from common.db.instances import TaskState, VmState
from common.db.pool import RETRYABLE, Database
from common.rpc import server as rpc_server
from services.compute.rpcapi import ComputeAPI
from services.scheduler import claims
from services.scheduler.faults import record_build_failure, set_error
from services.scheduler.filters import load_filters, passing_hosts
from services.scheduler.host_state import HostView
from services.scheduler.rpcapi import SchedulerAPI
from services.scheduler.weighers import load_weighers, weigh

__all__ = ["SchedulerManager"]

LOG = logging.getLogger(__name__)
EVENT = "scheduler_select_destination"
# Hosts ranked beyond the random head before a full weighing is needed (a request rarely loses that many races).
_FALLBACKS = 16


@dataclass
class _Prepared:
    row: asyncpg.Record
    allocated_host: str | None
    spec: dict[str, Any]
    lost: list[str] = field(default_factory=list)


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
        self.filters = load_filters(conf.scheduler.enabled_filters, view, conf)
        self.weighers = load_weighers(conf.scheduler.weighers, view, conf)
        self.lost_races = 0
        self.decisions = 0
        self._persisted: dict[str, tuple[float, tuple]] = {}
        self._usage_synced: datetime | None = None
        self._unsaved: dict[str, dict[str, Any]] = {}
        # Whether this scheduler writes reports to the DB: one of N does (the holder of the persister lock,
        # services/scheduler/leader.py); the others only keep their view.
        self.persists_reports = True

    async def start(self) -> None:
        """Seed the host view from the DB, so a restarted scheduler places at once."""
        rows = await self.db.run(compute_nodes.list_nodes)
        self.view.bootstrap([dict(r) for r in rows])
        await self.refresh_aggregates(RequestContext.admin())
        LOG.info("host view bootstrapped with %d hosts", len(rows))

    async def _settle_view(self, timeout: float = 5.0) -> None:
        deadline = time.monotonic() + timeout
        while self.view.has_pending() and time.monotonic() < deadline:  # noqa: ASYNC110 (rare path, short)
            await asyncio.sleep(0.01)
        async with self.db.pool.acquire() as conn:
            rows = await compute_nodes.list_usage(conn)
        for row in rows:
            self.view.claimed(row)

    async def resync_usage(self) -> None:
        """Learn other schedulers' claims and releases: reload the usage of hosts changed since the last pass
        (with a margin, as a row's ``updated_at`` is its transaction's start). Lost races teach the same, late."""
        since = None if self._usage_synced is None else self._usage_synced - timedelta(seconds=1)
        async with self.db.pool.acquire() as conn:
            rows = await compute_nodes.list_usage(conn, since)
            if not rows:
                return
        for row in rows:
            self.view.claimed(row)
        self._usage_synced = rows[0]["now"]

    async def refresh_aggregates(self, ctx: RequestContext) -> None:
        """Reload host aggregates (periodically, and when the API announces a change on the fanout)."""
        rows = await self.db.run(aggregates.list_)
        self.view.set_aggregates([dict(r) for r in rows])

    # ----- capacity fanout ---------------------------------------------------------------------------------------

    async def update_capacity(self, ctx: RequestContext, capacity: dict[str, Any]) -> None:
        """A host's report: refresh the view; queue it for ``persist_reports`` when it changed or every few
        report intervals (so the DB shows the host alive and a restarting scheduler bootstraps from it)."""
        state = self.view.update(capacity)
        if not self.persists_reports:
            return
        key = tuple(sorted((k, repr(v)) for k, v in capacity.items() if k != "reported_at"))
        last = self._persisted.get(state.host)
        now = time.monotonic()
        if last is not None and last[1] == key and now - last[0] < 3 * self.conf.compute.report_interval:
            return
        self._persisted[state.host] = (now, key)
        self._unsaved[state.host] = capacity

    async def persist_reports(self) -> int:
        """Write the reports queued by ``update_capacity`` in one transaction (called every fraction of a
        second by the service, so a burst of reports costs one commit, not one per host). Returns how many.
        A scheduler that does not persist reports (``persists_reports``) forgets what it queued, so that once it
        takes over it writes every host's next report."""
        if not self.persists_reports:
            self._unsaved, self._persisted = {}, {}
            return 0
        batch, self._unsaved = self._unsaved, {}
        if not batch:
            return 0

        async def persist(conn: asyncpg.Connection) -> list[asyncpg.Record]:
            rows = []
            for capacity in batch.values():
                rows.append(await compute_nodes.upsert_from_report(conn, capacity))
                await compute_nodes.upsert_service(
                    conn,
                    host=capacity["host"],
                    binary="stratus-compute",
                    topic=f"compute.{capacity['host']}",
                    broker_node=capacity.get("broker_node"),
                )
            return rows

        try:
            rows = await self.db.run(persist)
        except BaseException:
            self._unsaved = {**batch, **self._unsaved}  # next round, unless newer reports replaced them
            raise
        for row in rows:
            self.view.claimed(row)
        return len(rows)

    # ----- scheduling -------------------------------------------------------------------------------------------

    async def build_instances(
        self,
        ctx: RequestContext,
        request_spec: dict[str, Any] | None = None,
        request_specs: list[dict[str, Any]] | None = None,
    ) -> None:
        """Place one instance (``request_spec``) or a multi-create batch (``request_specs``), one after the other
        so each placement sees the claims before it (a batch in an anti-affinity group spreads).

        Idempotent: a redelivered request for an instance that moved on is dropped; one that holds a claim
        already is cast to that host again.
        """
        specs = request_specs if request_specs is not None else [request_spec] if request_spec else []
        for spec in specs:
            try:
                await self._schedule_one(ctx, spec)
            except Exception:
                # One instance's trouble must not starve the rest of its batch; its own state tells the story.
                if len(specs) == 1:
                    raise
                LOG.exception("scheduling %s failed", spec.get("instance_id"))

    async def _schedule_one(self, ctx: RequestContext, spec: dict[str, Any]) -> None:
        consumed_at = time.time()
        started = datetime.now(UTC)
        instance_id = spec["instance_id"]
        attempt = spec.get("attempt", 1)
        for f in spec.get("failures") or []:
            if f.get("attempt") == attempt - 1 and f.get("host"):
                self.view.build_failed(f["host"])  # the newest failure of this build, counted once
        # Fast path: a first attempt without hints (the API says so in the spec) needs no read before the claim,
        # whose statement itself checks that the instance still waits.
        fast = spec.get("scheduler_hints") == {} and not spec.get("failures")
        allocated_host = row = None
        resumed = await self._claimed_by_earlier_delivery(spec) if rpc_server.redelivered() else None
        if resumed is not None:
            allocated_host, row = resumed
        elif not fast:
            async with self.db.pool.acquire() as conn:  # read-only: no transaction, no BEGIN/COMMIT round trips
                prep = await self._prepare(conn, spec)
            if prep is None:
                LOG.info("instance %s no longer waits for scheduling; dropping the request", instance_id)
                return
            spec, allocated_host, row = prep.spec, prep.allocated_host, prep.row
        if allocated_host is not None:  # redelivered after a claim whose cast may not have gone out
            host, lost = allocated_host, 0
        else:
            # Before saying no (no host passes, or every claim lost): let this scheduler's claims in flight
            # settle (a lost one frees its room; an in-flight reservation can hide the one host that fits) and
            # reload usage from the DB, then look once more. Rare, so the extra read is cheap overall.
            lost = 0
            for last_try in (False, True):
                hosts, explanations = passing_hosts(self.filters, list(self.view.hosts.values()), spec)
                if hosts:
                    claimed = await self._claim_first(ctx, spec, hosts, started, lost, last_try)
                    if claimed is None:
                        return
                    if isinstance(claimed, int):  # every claim lost; not the last try
                        lost = claimed
                    else:
                        break
                elif last_try:
                    if fast:
                        async with self.db.pool.acquire() as conn:
                            if await self._prepare(conn, spec) is None:
                                return
                    await self._no_host(ctx, spec, explanations, started)
                    return
                await self._settle_view()
            host, row, lost = claimed
        if row is None:
            return
        spec = {**spec, "scheduling": {"scheduler": self.conf.host, "consumed_at": consumed_at, "lost_races": lost}}
        try:
            await self.compute.build_and_run_instance(ctx, host, objects.instance_to_wire(row), spec, attempt)
        except exceptions.StratusError as e:
            # Nobody consumes compute.<host> (service never started there) or the broker refused: that host
            # fails this attempt, the build moves on.
            LOG.warning("cast to compute.%s failed: %s", host, e.message)
            await record_build_failure(
                self.conf, self.db, self.scheduler, ctx,
                instance_id=instance_id, host=host, attempt=attempt,
                reason=f"compute.{host} unreachable: {e.message}", step="cast",
            )  # fmt: skip
            return
        self.decisions += 1

    async def _claimed_by_earlier_delivery(self, spec: dict[str, Any]) -> tuple[str, asyncpg.Record] | None:
        """For a redelivered request: the host and row of the claim its first delivery made, when that delivery
        died between the claim (which also moved the instance to ``networking``) and a confirmed cast to the
        compute. The caller casts again; the compute's build is idempotent. None when the instance is elsewhere.
        """
        async with self.db.pool.acquire() as conn:
            row = await claims.prepare(conn, spec["instance_id"])
        if (
            row is None
            or row["allocated_host"] is None
            or row["vm_state"] != VmState.BUILDING
            or row["task_state"] != TaskState.NETWORKING
            or row["attempt"] != spec.get("attempt", 1)
        ):
            return None
        LOG.info("instance %s: redelivered after its claim on %s; casting the build again", row["id"], row["host"])
        return row["allocated_host"], row

    async def _prepare(self, conn: asyncpg.Connection, spec: dict[str, Any]) -> _Prepared | None:
        """Read-only phase: is the instance still waiting; its claim if any; its group and hints resolved."""
        row = await claims.prepare(conn, spec["instance_id"])
        if row is None or row["task_state"] != TaskState.SCHEDULING or row["vm_state"] != VmState.BUILDING:
            return None
        hints = row.get("scheduler_hints") or {}
        spec = dict(spec)
        if hints.get("group"):
            group = await server_groups.get(conn, hints["group"])
            if group is not None:
                spec["group"] = {
                    "id": group["id"],
                    "name": group["name"],
                    "policy": group["policy"],
                    "rules": group["rules"] or {},
                    "hosts": await server_groups.member_hosts(conn, group["id"], spec["instance_id"]),
                }
        for hint in ("same_host", "different_host"):
            ids = hints.get(hint)
            if ids:
                found = await conn.fetch(
                    "SELECT DISTINCT n.host FROM allocations a JOIN compute_nodes n ON n.id = a.compute_node_id"
                    " WHERE a.instance_id = ANY($1)",
                    list(ids),
                )
                spec[f"{hint}_hosts"] = {r["host"] for r in found}
        return _Prepared(row, row["allocated_host"], spec)

    def _candidates(self, hosts: list, spec: dict[str, Any]) -> Iterator:
        """Claim order: a random pick among the best ``host_subset_size``, then the next best in order. Only the
        best few are ranked up front; the rest are weighed (again, on the view of that moment) if every one of
        those was lost."""
        k = min(self.conf.scheduler.host_subset_size, len(hosts))
        ranked = weigh(hosts, spec, self.weighers, best=k + _FALLBACKS)
        head = ranked[:k]
        random.shuffle(head)
        yield from head
        yield from ranked[k:]
        if len(ranked) < len(hosts):
            tried = {h.host for h in ranked}
            yield from weigh([h for h in hosts if h.host not in tried], spec, self.weighers)

    async def _claim_first(
        self,
        ctx: RequestContext,
        spec: dict[str, Any],
        hosts: list,
        started: datetime,
        lost: int = 0,
        last_try: bool = True,
    ) -> tuple[str, asyncpg.Record | None, int] | int | None:
        """Claim on a random pick among the best ``host_subset_size``, then the rest in order (``_candidates``).

        Returns (host, updated instance row or None when it vanished, lost races); when every claim lost, the
        number of lost races (not ``last_try``) or None after recording the no-host fault (``last_try``).
        ``lost`` counts the races lost by earlier tries.
        """
        flavor = spec["flavor"]
        instance_id = spec["instance_id"]
        attempt = spec.get("attempt", 1)
        group_id = spec["group"]["id"] if spec.get("group") else None
        group_refusals: list[str] = []
        for candidate in self._candidates(hosts, spec):
            host = candidate.host
            # Reserve in the view before awaiting the claim, so this scheduler's concurrent requests see it.
            self.view.reserve(host, flavor["vcpus"], flavor["ram_mb"], flavor["disk_gb"])

            after = f" (attempt {attempt}" + (f", after {lost} lost claim race(s))" if lost else ")")

            async def claim(conn: asyncpg.Connection, host: str = host, after: str = after) -> tuple:
                node = await compute_nodes.claim(
                    conn, instance_id=instance_id, host=host, vcpus=flavor["vcpus"],
                    memory_mb=flavor["ram_mb"], disk_gb=flavor["disk_gb"], group_id=group_id,
                )  # fmt: skip
                if node is None:  # lost: learn the host's real usage (another scheduler's claims) on the way
                    raise claims.ClaimLost(await compute_nodes.get_usage(conn, host))
                updated = await instances.update(
                    conn,
                    instance_id,
                    {"host": node["host"], "node": node["hypervisor_hostname"], "task_state": TaskState.NETWORKING,
                     "attempt": attempt},
                    expected_task_state=[TaskState.SCHEDULING],
                )  # fmt: skip
                if updated is None:  # deleted or moved on meanwhile: roll the claim back
                    raise claims.ClaimLost(None)
                await self._record_event(conn, ctx, instance_id, "Success", f"chose host {host}{after}", started)
                return True, node, updated

            amounts = (flavor["vcpus"], flavor["ram_mb"], flavor["disk_gb"])
            try:
                if group_id is None:
                    won, node, updated = await self._claim_once(
                        instance_id, host, flavor, attempt, ctx.request_id, after, started
                    )
                else:
                    won, node, updated = await self.db.run(claim)
            except claims.ClaimLost as e:
                self.view.settle(host, *amounts, e.usage)
                if e.usage is None:  # the instance moved on (deleted): nothing to place
                    return None
                won, node, updated = False, e.usage, None
            except compute_nodes.GroupPolicyViolation as e:
                self.view.settle(host, *amounts, None)
                group_refusals.append(str(e))
                won, node = False, None
            except BaseException:
                self.view.settle(host, *amounts, None)
                raise
            else:
                self.view.settle(host, *amounts, node)
            if won:
                return host, updated, lost
            lost += 1
            self.lost_races += 1
            LOG.info("claim on %s lost for %s; trying the next host", host, instance_id)
        if not last_try:
            return lost
        why = [f"{len(hosts)} hosts passed the filters but every claim lost (to concurrent requests or their "
               f"limits changed)"]  # fmt: skip
        if group_refusals:
            why.append(f"server group guard: {group_refusals[0]}")
        await self._no_host(ctx, spec, why, started)
        return None

    async def _claim_once(
        self,
        instance_id: str,
        host: str,
        flavor: dict,
        attempt: int,
        request_id: str,
        after: str,
        started: datetime,
    ) -> tuple:
        """The one-statement claim, outside an explicit transaction (the statement is atomic on its own).
        Raises ``ClaimLost``; on a lost connection the statement is retried through ``Database.run``."""

        async def run(conn: asyncpg.Connection) -> tuple:
            try:
                node, row = await claims.claim_and_assign(
                    conn, instance_id=instance_id, host=host, flavor=flavor, attempt=attempt, request_id=request_id,
                    event=EVENT, scheduler_host=self.conf.host, details=("chose host ", after), started=started,
                )  # fmt: skip
            except claims.ClaimLost as e:
                if e.claimed:  # the instance moved on within the statement: give the claim back
                    await compute_nodes.release(conn, instance_id)
                raise
            return True, node, row

        try:
            async with self.db.pool.acquire() as conn:
                return await run(conn)
        except RETRYABLE:
            return await self.db.run(run)

    async def _record_event(
        self,
        conn: asyncpg.Connection,
        ctx: RequestContext,
        instance_id: str,
        result: str,
        details: str,
        started: datetime,
    ) -> None:
        """This scheduler's event, start and finish at once, in one statement (it is the event's only writer)."""
        await conn.execute(
            "INSERT INTO instance_action_events (action_id, event, host, result, details, start_time, finish_time)"
            " SELECT id, $3, $4, $5, $6, $7, now() FROM instance_actions WHERE instance_id = $1"
            " ORDER BY (request_id = $2) DESC, id DESC LIMIT 1",
            instance_id, ctx.request_id, EVENT, self.conf.host, result, details, started,
        )  # fmt: skip

    async def _no_host(
        self, ctx: RequestContext, spec: dict[str, Any], explanations: list[str], started: datetime
    ) -> None:
        flavor = spec["flavor"]
        needs = f"{flavor['vcpus']} vCPU, {flavor['ram_mb']} MiB RAM, {flavor['disk_gb']} GiB disk"
        extra = []
        if spec.get("availability_zone"):
            extra.append(f"availability zone {spec['availability_zone']}")
        if spec.get("group"):
            extra.append(f"server group {spec['group']['name']} ({spec['group']['policy']})")
        if extra:
            needs += ", " + ", ".join(extra)
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
        await self.db.run(lambda c: self._record_event(c, ctx, spec["instance_id"], "Error", message, started))
        await set_error(self.db, ctx, spec["instance_id"], message, code=500, host=None)
