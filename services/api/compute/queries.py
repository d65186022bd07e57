"""Read-only queries the compute API makes on other aggregates (flavors, images, networks, ports, services, usage).

They read tables other services own and never write them: the compute API only needs to know that a network
is there and visible, and which addresses an instance holds.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import asyncpg

from common.db.aggregates import AGGREGATE_ZONE
from common.db.networks import DEVICE_OWNER_COMPUTE

__all__ = [
    "addresses_for",
    "boot_reads",
    "get_port",
    "host_zones",
    "list_services",
    "node_states",
    "project_usage",
    "visible_networks",
]


async def addresses_for(conn: asyncpg.Connection, instance_ids: Sequence[str]) -> dict[str, list[asyncpg.Record]]:
    """Per instance, its fixed addresses with network name and MAC, in port creation order: only ports the cloud
    bound to it, of its own project."""
    rows = await conn.fetch(
        "SELECT p.device_id, n.name AS network_name, p.mac_address::text AS mac_address,"
        " host(a.ip_address) AS ip_address, family(a.ip_address) AS ip_version"
        " FROM ports p JOIN ip_allocations a ON a.port_id = p.id JOIN networks n ON n.id = p.network_id"
        " JOIN instances i ON i.id = p.device_id AND i.project_id = p.project_id"
        f" WHERE p.device_id = ANY($1) AND p.device_owner = '{DEVICE_OWNER_COMPUTE}'"
        " ORDER BY p.created_at, p.id, a.ip_address",
        list(instance_ids),
    )
    out: dict[str, list[asyncpg.Record]] = {}
    for r in rows:
        out.setdefault(r["device_id"], []).append(r)
    return out


async def boot_reads(
    conn: asyncpg.Connection, flavor_id: str, image_id: str, network_ids: Sequence[str], project_id: str | None
) -> tuple[dict[str, Any] | None, dict[str, Any] | None, set[str]]:
    """What a boot names, read in one round trip: the flavor and the (not deleted) image, each its columns as
    JSON gives them (timestamps as strings) or None, and which of ``network_ids`` ``project_id`` may attach to
    (shared or its own; any network when ``project_id`` is None)."""
    row = await conn.fetchrow(
        "SELECT (SELECT row_to_json(f) FROM flavors f WHERE f.id = $1) AS flavor,"
        " (SELECT row_to_json(i) FROM images i WHERE i.id = $2 AND i.deleted_at IS NULL) AS image,"
        " ARRAY(SELECT id FROM networks WHERE id = ANY($3::text[])"
        "       AND ($4::text IS NULL OR shared OR project_id = $4)) AS networks",
        flavor_id, image_id, list(network_ids), project_id,
    )  # fmt: skip
    return row["flavor"], row["image"], set(row["networks"])


async def visible_networks(conn: asyncpg.Connection, project_id: str) -> list[asyncpg.Record]:
    """Networks ``project_id`` may attach to, excluding external ones (guests do not plug into those directly)."""
    return await conn.fetch(
        "SELECT * FROM networks WHERE (shared OR project_id = $1) AND NOT external AND admin_state_up ORDER BY name",
        project_id,
    )


async def host_zones(conn: asyncpg.Connection, hosts: Sequence[str]) -> dict[str, str]:
    """The availability zone of each of these compute hosts (an aggregate's zone overrides the host's own)."""
    rows = await conn.fetch(
        f"SELECT host, COALESCE({AGGREGATE_ZONE}, availability_zone) AS availability_zone FROM compute_nodes n"
        " WHERE host = ANY($1)",
        list(hosts),
    )
    return {r["host"]: r["availability_zone"] for r in rows}


async def get_port(conn: asyncpg.Connection, port_id: str) -> asyncpg.Record | None:
    return await conn.fetchrow("SELECT * FROM ports WHERE id = $1", port_id)


async def list_services(conn: asyncpg.Connection) -> list[asyncpg.Record]:
    """Service rows with their age in seconds (measured by the database clock, the one all nodes share)."""
    return await conn.fetch(
        "SELECT s.*, EXTRACT(EPOCH FROM now() - s.last_seen_at)::float AS age,"
        " n.availability_zone AS node_zone"
        " FROM services s LEFT JOIN compute_nodes n ON n.host = s.host"
        ' ORDER BY s."binary", s.host'
    )


async def project_usage(conn: asyncpg.Connection, project_id: str) -> asyncpg.Record:
    """Instances, vCPUs and RAM the project's live instances use (from their flavor snapshots)."""
    return await conn.fetchrow(
        "SELECT count(*) AS instances, COALESCE(sum((flavor->>'vcpus')::int), 0) AS cores,"
        " COALESCE(sum((flavor->>'ram_mb')::int), 0) AS ram"
        " FROM instances WHERE project_id = $1 AND deleted_at IS NULL",
        project_id,
    )


async def node_states(conn: asyncpg.Connection) -> list[dict]:
    """Compute nodes with their report age and the matching compute service's row, if any; the availability
    zone is the effective one (an aggregate's overrides the host's own)."""
    rows = await conn.fetch(
        f"SELECT n.*, {AGGREGATE_ZONE} AS aggregate_zone,"
        " EXTRACT(EPOCH FROM now() - n.last_report_at)::float AS report_age,"
        " s.id AS service_id, s.disabled, s.disabled_reason,"
        " EXTRACT(EPOCH FROM now() - s.last_seen_at)::float AS service_age"
        " FROM compute_nodes n LEFT JOIN LATERAL ("
        "   SELECT * FROM services WHERE host = n.host AND (\"binary\" LIKE '%compute%' OR topic LIKE 'compute%')"
        "   ORDER BY last_seen_at DESC LIMIT 1"
        " ) s ON true ORDER BY n.host"
    )
    return [{**r, "availability_zone": r["aggregate_zone"] or r["availability_zone"]} for r in rows]
