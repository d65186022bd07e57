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
from common.db import actions, aggregates, compute_nodes, instances, server_groups
from common.db import networks as networks_db
from common.db.instances import TaskState, VmState
from common.db.pool import RETRYABLE, Database
from common.rpc import server as rpc_server
from services.compute.rpcapi import ComputeAPI
from services.scheduler import claims
from services.scheduler.faults import error_in, record_build_failure, set_error
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


@dataclass
class _Placed:
    """An instance claimed on ``host`` (``row``: its row after the claim), not yet cast."""

    spec: dict[str, Any]
    host: str
    row: Any


@dataclass
class _Unplaced:
    """An instance no host could take (``message``: the explained fault), not yet recorded."""

    spec: dict[str, Any]
    message: str
    started: datetime


@dataclass
class _AllLost:
    """Every candidate's claim was lost: how many races so far, and why no host took it."""

    lost: int
    why: list[str]


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
        # Unchanged reports are written now and then all the same: they are the host's heartbeat in the DB.
        refresh = min(3 * self.conf.compute.report_interval, self.conf.scheduler.service_down_time / 2)
        if last is not None and last[1] == key and now - last[0] < refresh:
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
            # The report is also the compute service's heartbeat (services.last_seen_at).
            rows = await compute_nodes.upsert_reports(conn, list(batch.values()))
            await compute_nodes.upsert_services(
                conn, "stratus-compute", [(h, f"compute.{h}", c.get("broker_node")) for h, c in batch.items()]
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
        """Place one instance (``request_spec``) or a multi-create batch (``request_specs``, see ``_build_batch``).

        Idempotent: a redelivered request for an instance that moved on is dropped; one that holds a claim
        already is cast to that host again.
        """
        if request_specs is not None:
            await self._build_batch(ctx, request_specs)
        elif request_spec:
            outcome = await self._place(ctx, request_spec)
            if isinstance(outcome, _Placed):
                await self._cast(ctx, outcome)
            elif outcome is not None:
                await self._record_no_host(ctx, outcome)

    async def _build_batch(self, ctx: RequestContext, specs: list[dict[str, Any]]) -> None:
        """Place a multi-create batch one after the other, so each placement sees the claims before it (a batch
        in an anti-affinity group spreads), all or nothing at ``min_count`` (carried by every spec, default 1).

        Nothing is cast and no fault recorded until ``min_count`` instances are placed; from then on each
        instance builds or fails on its own. If the batch ends short of it, ``_fail_batch`` gives back every
        claim and puts the whole batch in ERROR. Redelivery: an instance that moved on (past an earlier delivery's
        decision, or deleted) counts as placed, since only a decision or its owner moves a batch member on; one
        that holds its claim counts as placed and is cast again once the decision is made.
        """
        need = max(int(s.get("min_count") or 1) for s in specs) if specs else 1
        placed: list[_Placed] = []
        unplaced: list[_Unplaced] = []
        moved_on = 0
        for spec in specs:
            decided = len(placed) + moved_on >= need
            try:
                outcome = await self._place(ctx, spec)
            except Exception:
                # One instance's trouble must not starve the rest of its batch; _fail_batch errors it if the
                # batch fails, otherwise its own state tells the story.
                LOG.exception("scheduling %s failed", spec.get("instance_id"))
                continue
            if outcome is None:
                moved_on += 1
            elif decided and isinstance(outcome, _Placed):
                await self._cast(ctx, outcome)
            elif decided:
                await self._record_no_host(ctx, outcome)
            elif isinstance(outcome, _Placed):
                placed.append(outcome)
            else:
                unplaced.append(outcome)
            if not decided and len(placed) + moved_on >= need:  # the decision: build; release what waited on it
                for p in placed:
                    await self._cast(ctx, p)
                for u in unplaced:
                    await self._record_no_host(ctx, u)
        if len(placed) + moved_on < need:
            await self._fail_batch(ctx, specs, placed, unplaced, need)

    async def _place(self, ctx: RequestContext, spec: dict[str, Any]) -> _Placed | _Unplaced | None:
        """Phases prepare, filter, weigh and claim for one instance. Records the claim (with its event) but no
        failure: the caller casts a placement or records the no-host fault. None when the instance no longer
        waits for scheduling (deleted, or moved on in an earlier delivery)."""
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
                return None
            spec, allocated_host, row = prep.spec, prep.allocated_host, prep.row
        if allocated_host is not None:  # redelivered after a claim whose cast may not have gone out
            host, lost = allocated_host, 0
        else:
            # Before saying no (no host passes, or every claim lost): let this scheduler's claims in flight
            # settle (a lost one frees its room; an in-flight reservation can hide the one host that fits) and
            # reload usage from the DB, then look once more. Rare, so the extra read is cheap overall.
            lost = 0
            for last_try in (False, True):
                hosts, explanations = passing_hosts(self.filters, self.view, spec)
                if hosts:
                    claimed = await self._claim_first(ctx, spec, hosts, started, lost)
                    if claimed is None:
                        return None
                    if not isinstance(claimed, _AllLost):
                        break
                    lost = claimed.lost
                    if last_try:
                        return _Unplaced(spec, self._no_host_message(spec, claimed.why), started)
                elif last_try:
                    if fast:
                        async with self.db.pool.acquire() as conn:
                            if await self._prepare(conn, spec) is None:
                                return None
                    return _Unplaced(spec, self._no_host_message(spec, explanations), started)
                await self._settle_view()
            host, row, lost = claimed
        if row is None:
            return None
        spec = {**spec, "scheduling": {"scheduler": self.conf.host, "consumed_at": consumed_at, "lost_races": lost}}
        return _Placed(spec, host, row)

    async def _cast(self, ctx: RequestContext, placed: _Placed) -> None:
        """The cast phase: ``build_and_run_instance`` to the claimed host; a cast nobody takes fails the attempt."""
        instance_id, host, attempt = placed.spec["instance_id"], placed.host, placed.spec.get("attempt", 1)
        try:
            await self.compute.build_and_run_instance(
                ctx, host, objects.instance_to_wire(placed.row), placed.spec, attempt
            )
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

    async def _fail_batch(
        self,
        ctx: RequestContext,
        specs: list[dict[str, Any]],
        placed: list[_Placed],
        unplaced: list[_Unplaced],
        need: int,
    ) -> None:
        """Fewer than ``min_count`` of a batch placed: in one transaction, give back every claim of the batch and
        put each of its instances that still waits on this decision in ERROR, saying how many could be placed
        and why the others could not. Idempotent (guarded on the waiting states; a redelivery finds them ERROR).
        """
        started = datetime.now(UTC)
        head = (
            f"Only {len(placed)} of the {len(specs)} servers requested together could be placed, fewer than "
            f"min_count {need}: none of them is built."
        )
        own = {u.spec["instance_id"]: u.message for u in unplaced}
        if unplaced:
            first = unplaced[0]
            why = f"{first.spec['instance_id']} found no host: {first.message}"
        else:
            why = "The others failed to schedule (internal error, see the scheduler's log)."
        LOG.warning("batch of %d (request %s): %s %s", len(specs), ctx.request_id, head, why)

        async def tx(conn: asyncpg.Connection) -> list[asyncpg.Record]:
            usage = []
            for spec in specs:
                iid = spec["instance_id"]
                message = f"{head} {own.get(iid) or why}"
                failed = await error_in(
                    conn, ctx, iid, message, code=500, host=None, values={"host": None, "node": None},
                    expected_vm_state=[VmState.BUILDING],
                    expected_task_state=[TaskState.SCHEDULING, TaskState.NETWORKING],
                )  # fmt: skip
                if not failed:  # deleted, or moved on meanwhile: not this decision's to fail
                    continue
                released = await compute_nodes.release(conn, iid)
                if released is not None:
                    usage.append(released)
                await self._record_event(conn, ctx, iid, "Error", message, started)
            return usage

        for row in await self.db.run(tx):
            self.view.claimed(row)

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
    ) -> tuple[str, asyncpg.Record | None, int] | _AllLost | None:
        """Claim on a random pick among the best ``host_subset_size``, then the rest in order (``_candidates``).

        Returns (host, updated instance row or None when it vanished, lost races); ``_AllLost`` when every claim
        lost; None when the instance moved on (deleted). ``lost`` counts the races lost by earlier tries.
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
                await networks_db.bind_instance_ports(conn, instance_id, host)
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
        why = [f"{len(hosts)} hosts passed the filters but every claim lost (to concurrent requests or their "
               f"limits changed)"]  # fmt: skip
        if group_refusals:
            why.append(f"server group guard: {group_refusals[0]}")
        return _AllLost(lost, why)

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
            "INSERT INTO instance_action_events AS e (action_id, event, host, result, details, start_time,"
            " finish_time) SELECT a.id, $3, $4, $5, $6, $7, now()"
            f" FROM ({actions.ACTION_OF.format(instance='$1', request='$2')}) a {actions.ONE_SHOT_CONFLICT}",
            instance_id, ctx.request_id, EVENT, self.conf.host, result, details, started,
        )  # fmt: skip

    def _no_host_message(self, spec: dict[str, Any], explanations: list[str]) -> str:
        """What was asked and, per filter, how many hosts it removed and why; earlier attempts as the cause."""
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
        return message

    async def _record_no_host(self, ctx: RequestContext, unplaced: _Unplaced) -> None:
        """The instance goes to ERROR with its no-host fault, also recorded as this scheduler's event."""
        instance_id, message = unplaced.spec["instance_id"], unplaced.message
        LOG.warning("instance %s: %s", instance_id, message)
        await self.db.run(lambda c: self._record_event(c, ctx, instance_id, "Error", message, unplaced.started))
        await set_error(self.db, ctx, instance_id, message, code=500, host=None)
