"""Compute nodes, services and allocations: the claim is one conditional statement, so two schedulers can
never both win the last slot on a host."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import asyncpg

from common.db import server_groups

__all__ = [
    "GroupPolicyViolation",
    "claim",
    "get_allocation",
    "get_usage",
    "list_usage",
    "list_nodes",
    "release",
    "upsert_from_report",
    "upsert_reports",
    "upsert_service",
    "upsert_services",
]

_REPORTED = (
    "hypervisor_hostname", "hypervisor_type", "hypervisor_version", "virt_type", "cpu_info", "vcpus",
    "memory_mb", "local_gb", "running_vms", "cpu_allocation_ratio", "ram_allocation_ratio",
    "disk_allocation_ratio", "reserved_host_memory_mb", "reserved_host_disk_gb", "reserved_host_cpus",
    "availability_zone",
)  # fmt: skip


_TYPES = {
    "hypervisor_hostname": "text", "hypervisor_type": "text", "hypervisor_version": "integer", "virt_type": "text",
    "cpu_info": "jsonb", "vcpus": "integer", "memory_mb": "integer", "local_gb": "integer", "running_vms": "integer",
    "cpu_allocation_ratio": "real", "ram_allocation_ratio": "real", "disk_allocation_ratio": "real",
    "reserved_host_memory_mb": "integer", "reserved_host_disk_gb": "integer", "reserved_host_cpus": "integer",
    "availability_zone": "text",
}  # fmt: skip
assert set(_TYPES) == set(_REPORTED)


def _columns(report: dict[str, Any]) -> tuple[str, ...]:
    return tuple(c for c in _REPORTED if report.get(c) is not None or c == "hypervisor_hostname")


async def upsert_from_report(conn: asyncpg.Connection, report: dict[str, Any]) -> asyncpg.Record:
    """Record a capacity report. Totals and ratios come from the host; ``*_used`` never do (claims own them)."""
    [row] = await upsert_reports(conn, [report])
    return row


async def upsert_reports(conn: asyncpg.Connection, reports: list[dict[str, Any]]) -> list[asyncpg.Record]:
    """Record capacity reports (one per host), one statement per set of reported columns (normally one in all),
    in host order. Returns the rows."""
    groups: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    for report in sorted(reports, key=lambda r: r["host"]):
        groups.setdefault(_columns(report), []).append(report)
    rows: list[asyncpg.Record] = []
    for cols, group in groups.items():
        record = ", ".join(["host text", *(f"{c} {_TYPES[c]}" for c in cols)])
        updates = ", ".join(f"{c} = EXCLUDED.{c}" for c in [*cols, "last_report_at"])
        data = [{"host": r["host"], **{c: r.get(c) for c in cols}} for r in group]
        for d in data:
            d["hypervisor_hostname"] = d["hypervisor_hostname"] or d["host"]
        rows.extend(
            await conn.fetch(
                f"INSERT INTO compute_nodes (id, host, {', '.join(cols)}, last_report_at)"
                f" SELECT gen_random_uuid()::text, r.host, {', '.join(f'r.{c}' for c in cols)}, now()"
                f" FROM jsonb_to_recordset($1::jsonb) AS r({record})"
                f" ON CONFLICT (host) DO UPDATE SET {updates}, updated_at = now() RETURNING *",
                data,
            )
        )
    return rows


async def list_nodes(conn: asyncpg.Connection) -> list[asyncpg.Record]:
    return await conn.fetch("SELECT * FROM compute_nodes ORDER BY host")


# The capacity a claim may use: (total - reserved) * ratio, per resource; a ratio set in the metadata of an
# aggregate holding the host overrides the host's own (the lowest of several wins), as the scheduler assumes.
# The CTE ``r`` is read through scalar subqueries, never joined in the UPDATE: when two claims queue on the same
# row lock, PostgreSQL re-checks the waiting UPDATE against the new row version (EvalPlanQual), and a joined CTE
# there yields no row, which made a claim that fits look lost.
_FITS = """
    vcpus_used + $2 <= (vcpus - reserved_host_cpus) * COALESCE((SELECT cpu FROM r), cpu_allocation_ratio)
    AND memory_mb_used + $3
        <= (memory_mb - reserved_host_memory_mb) * COALESCE((SELECT ram FROM r), ram_allocation_ratio)
    AND local_gb_used + $4 <= (local_gb - reserved_host_disk_gb) * COALESCE((SELECT disk FROM r), disk_allocation_ratio)
"""

# One row always (aggregates without a GROUP BY): NULLs when no aggregate of the host overrides a ratio.
_RATIOS = """
    SELECT min((a.metadata->>'cpu_allocation_ratio')::real) AS cpu,
           min((a.metadata->>'ram_allocation_ratio')::real) AS ram,
           min((a.metadata->>'disk_allocation_ratio')::real) AS disk
    FROM aggregate_hosts h JOIN aggregates a ON a.id = h.aggregate_id AND a.deleted_at IS NULL
    WHERE h.host = $1
"""


class GroupPolicyViolation(Exception):
    """The claim would break a server group's hard (anti-)affinity policy; ``str()`` says how."""


async def claim(
    conn: asyncpg.Connection,
    *,
    instance_id: str,
    host: str,
    vcpus: int,
    memory_mb: int,
    disk_gb: int,
    group_id: str | None = None,
) -> asyncpg.Record | None:
    """Claim resources on ``host`` for ``instance_id``: the node's new usage, or None when they do not fit.

    Idempotent: an instance that already holds an allocation gets that allocation's node back, whatever host
    was asked for (a redelivered request must not claim twice). With ``group_id`` the group's hard policy is
    checked in the same transaction under a lock on the group row; a violation raises
    ``GroupPolicyViolation`` (the caller's transaction must then roll back or move on to another host).
    """
    existing = await conn.fetchrow(
        "SELECT n.* FROM allocations a JOIN compute_nodes n ON n.id = a.compute_node_id WHERE a.instance_id = $1",
        instance_id,
    )
    if existing is not None:
        return existing
    if group_id is not None:
        why = await server_groups.check_placement(conn, group_id, instance_id, host)
        if why is not None:
            raise GroupPolicyViolation(why)
    return await conn.fetchrow(
        f"""
        WITH r AS ({_RATIOS}), node AS (
            UPDATE compute_nodes SET vcpus_used = vcpus_used + $2, memory_mb_used = memory_mb_used + $3,
                   local_gb_used = local_gb_used + $4, updated_at = now()
            WHERE host = $1 AND {_FITS}
            RETURNING compute_nodes.*
        ), alloc AS (
            INSERT INTO allocations (instance_id, compute_node_id, vcpus, memory_mb, disk_gb)
            SELECT $5, id, $2, $3, $4 FROM node
        )
        SELECT * FROM node
        """,
        host, vcpus, memory_mb, disk_gb, instance_id,
    )  # fmt: skip


async def release(conn: asyncpg.Connection, instance_id: str) -> asyncpg.Record | None:
    """Give back the instance's allocation; returns the usage of the host it was on after that (``get_usage``'s
    columns), None if it held none. Idempotent."""
    return await conn.fetchrow(
        """
        WITH a AS (DELETE FROM allocations WHERE instance_id = $1 RETURNING *)
        UPDATE compute_nodes n SET vcpus_used = n.vcpus_used - a.vcpus, memory_mb_used = n.memory_mb_used - a.memory_mb,
               local_gb_used = n.local_gb_used - a.disk_gb, updated_at = now()
        FROM a WHERE n.id = a.compute_node_id RETURNING n.host, n.vcpus_used, n.memory_mb_used, n.local_gb_used
        """,
        instance_id,
    )


async def get_usage(conn: asyncpg.Connection, host: str) -> asyncpg.Record | None:
    return await conn.fetchrow(
        "SELECT host, vcpus_used, memory_mb_used, local_gb_used FROM compute_nodes WHERE host = $1", host
    )


async def list_usage(conn: asyncpg.Connection, since: datetime | None = None) -> list[asyncpg.Record]:
    """Usage of the hosts changed since ``since`` (all when None); each row also carries the DB's ``now``."""
    return await conn.fetch(
        "SELECT host, vcpus_used, memory_mb_used, local_gb_used, now() AS now FROM compute_nodes"
        " WHERE $1::timestamptz IS NULL OR updated_at >= $1",
        since,
    )


async def get_allocation(conn: asyncpg.Connection, instance_id: str) -> asyncpg.Record | None:
    return await conn.fetchrow(
        "SELECT a.*, n.host FROM allocations a JOIN compute_nodes n ON n.id = a.compute_node_id"
        " WHERE a.instance_id = $1",
        instance_id,
    )


async def upsert_services(
    conn: asyncpg.Connection, binary: str, hosts: list[tuple[str, str | None, str | None]]
) -> None:
    """Mark services of ``binary`` alive: ``hosts`` holds (host, topic, broker_node) tuples. One statement."""
    await conn.execute(
        'INSERT INTO services (id, host, "binary", topic, broker_node)'
        " SELECT gen_random_uuid()::text, h, $1, t, b FROM unnest($2::text[], $3::text[], $4::text[]) AS s(h, t, b)"
        ' ORDER BY h ON CONFLICT (host, "binary") DO UPDATE SET last_seen_at = now(), updated_at = now(),'
        " topic = EXCLUDED.topic, broker_node = EXCLUDED.broker_node",
        binary, [h[0] for h in hosts], [h[1] for h in hosts], [h[2] for h in hosts],
    )  # fmt: skip


async def upsert_service(
    conn: asyncpg.Connection, *, host: str, binary: str, topic: str | None, broker_node: str | None
) -> None:
    """Mark one service alive (``upsert_services`` with one host)."""
    await upsert_services(conn, binary, [(host, topic, broker_node)])
