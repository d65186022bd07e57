"""Compute nodes, services and allocations: the claim is one conditional statement, so two schedulers can
never both win the last slot on a host."""

from __future__ import annotations

import uuid
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
    "upsert_service",
]

_REPORTED = (
    "hypervisor_hostname", "hypervisor_type", "hypervisor_version", "virt_type", "cpu_info", "vcpus",
    "memory_mb", "local_gb", "running_vms", "cpu_allocation_ratio", "ram_allocation_ratio",
    "disk_allocation_ratio", "reserved_host_memory_mb", "reserved_host_disk_gb", "reserved_host_cpus",
    "availability_zone",
)  # fmt: skip


async def upsert_from_report(conn: asyncpg.Connection, report: dict[str, Any]) -> asyncpg.Record:
    """Record a capacity report. Totals and ratios come from the host; ``*_used`` never do (claims own them)."""
    cols = [c for c in _REPORTED if report.get(c) is not None]
    values = [report[c] for c in cols]
    if "hypervisor_hostname" not in cols:
        cols.append("hypervisor_hostname")
        values.append(report["host"])
    insert_cols = ["id", "host", *cols, "last_report_at"]
    placeholders = ", ".join(f"${i}" for i in range(1, len(insert_cols)))
    updates = ", ".join(f"{c} = EXCLUDED.{c}" for c in [*cols, "last_report_at"])
    return await conn.fetchrow(
        f"INSERT INTO compute_nodes ({', '.join(insert_cols)}) VALUES ({placeholders}, now())"
        f" ON CONFLICT (host) DO UPDATE SET {updates}, updated_at = now() RETURNING *",
        str(uuid.uuid4()),
        report["host"],
        *values,
    )


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


async def release(conn: asyncpg.Connection, instance_id: str) -> str | None:
    """Give back the instance's allocation; returns the host it was on (None if it held none). Idempotent."""
    return await conn.fetchval(
        """
        WITH a AS (DELETE FROM allocations WHERE instance_id = $1 RETURNING *)
        UPDATE compute_nodes n SET vcpus_used = n.vcpus_used - a.vcpus, memory_mb_used = n.memory_mb_used - a.memory_mb,
               local_gb_used = n.local_gb_used - a.disk_gb, updated_at = now()
        FROM a WHERE n.id = a.compute_node_id RETURNING n.host
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


async def upsert_service(
    conn: asyncpg.Connection, *, host: str, binary: str, topic: str | None, broker_node: str | None
) -> None:
    await conn.execute(
        'INSERT INTO services (id, host, "binary", topic, broker_node) VALUES ($1, $2, $3, $4, $5)'
        ' ON CONFLICT (host, "binary") DO UPDATE SET last_seen_at = now(), updated_at = now(),'
        " topic = EXCLUDED.topic, broker_node = EXCLUDED.broker_node",
        str(uuid.uuid4()), host, binary, topic, broker_node,
    )  # fmt: skip
