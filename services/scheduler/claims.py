"""The scheduler's claim: resources on the host, the allocation row, the instance moved on to its host, its
ports bound to that host and the scheduler's action event, in one conditional statement (one round trip).

The fit test and ratio overrides are those of ``common.db.compute_nodes.claim`` (same SQL fragments), so the
in-memory filters, this statement and the plain claim agree. Claims for server-group members go through
``compute_nodes.claim`` instead, whose group guard needs a lock and a read first.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import asyncpg

from common.db.actions import ACTION_OF, ONE_SHOT_CONFLICT
from common.db.compute_nodes import _FITS, _RATIOS
from common.db.networks import BIND_INSTANCE_PORTS

__all__ = ["ClaimLost", "claim_and_assign", "prepare"]


class ClaimLost(Exception):
    """Not placed, and nothing changed: the host lacks room (``usage`` is its real usage) or the instance left
    the scheduling state meanwhile (``usage`` is None)."""

    def __init__(self, usage: Any, claimed: bool = False) -> None:
        super().__init__("claim lost")
        self.usage = usage
        self.claimed = claimed  # the node was claimed but the instance not moved: the caller must release


_PREPARE = """
SELECT i.*, n.host AS allocated_host
FROM instances i LEFT JOIN allocations a ON a.instance_id = i.id LEFT JOIN compute_nodes n ON n.id = a.compute_node_id
WHERE i.id = $1 AND i.deleted_at IS NULL
"""


async def prepare(conn: asyncpg.Connection, instance_id: str) -> asyncpg.Record | None:
    """The instance row plus ``allocated_host`` (the host of its allocation, if it holds one)."""
    return await conn.fetchrow(_PREPARE, instance_id)


_CLAIM = f"""
WITH r AS ({_RATIOS}),
inst AS (
    SELECT id FROM instances WHERE id = $5 AND task_state = 'scheduling' AND vm_state = 'building'
    AND deleted_at IS NULL
),
node AS (
    UPDATE compute_nodes SET vcpus_used = vcpus_used + $2, memory_mb_used = memory_mb_used + $3,
           local_gb_used = local_gb_used + $4, updated_at = now()
    WHERE host = $1 AND EXISTS (SELECT 1 FROM inst) AND {_FITS}
    RETURNING compute_nodes.*
),
alloc AS (
    INSERT INTO allocations (instance_id, compute_node_id, vcpus, memory_mb, disk_gb)
    SELECT $5, id, $2, $3, $4 FROM node
),
moved AS (
    UPDATE instances i SET host = node.host, node = node.hypervisor_hostname, task_state = 'networking',
           attempt = $6, updated_at = now()
    FROM node WHERE i.id = $5 AND i.task_state = 'scheduling' AND i.deleted_at IS NULL
    RETURNING i.*
),
bound AS (
    {BIND_INSTANCE_PORTS.format(host="$1", instance="$5")} AND EXISTS (SELECT 1 FROM moved)
),
ev AS (
    INSERT INTO instance_action_events AS e (action_id, event, host, result, details, start_time, finish_time)
    SELECT a.id, $8, $9, 'Success', $10 || node.host || $11, $12, now()
    FROM node, ({ACTION_OF.format(instance="$5", request="$7")}) a
    {ONE_SHOT_CONFLICT}
)
SELECT (SELECT row_to_json(node) FROM node) AS node, (SELECT row_to_json(moved) FROM moved) AS moved,
       (SELECT count(*) FROM inst) AS waiting,
       (SELECT json_build_object('host', host, 'vcpus_used', vcpus_used, 'memory_mb_used', memory_mb_used,
                                 'local_gb_used', local_gb_used) FROM compute_nodes WHERE host = $1) AS usage
"""


async def claim_and_assign(
    conn: asyncpg.Connection,
    *,
    instance_id: str,
    host: str,
    flavor: dict[str, Any],
    attempt: int,
    request_id: str,
    event: str,
    scheduler_host: str,
    details: tuple[str, str],
    started: datetime,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Claim on ``host`` and assign the instance to it: (node usage row, instance row) as dicts.

    One atomic statement: raises ``ClaimLost`` when the instance was not placed. When the node was claimed but
    the instance moved on within the statement (``ClaimLost.claimed``), the caller must give the claim back
    (roll back its transaction, or ``compute_nodes.release`` when it ran without one). ``details`` are the text
    before and after the host name in the event.
    """
    row = await conn.fetchrow(
        _CLAIM, host, flavor["vcpus"], flavor["ram_mb"], flavor["disk_gb"], instance_id, attempt, request_id,
        event, scheduler_host, details[0], details[1], started,
    )  # fmt: skip
    node, moved = row["node"], row["moved"]
    if node is None or moved is None:
        raise ClaimLost(row["usage"] if row["waiting"] and node is None else None, claimed=node is not None)
    return node, moved
