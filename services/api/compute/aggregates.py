"""``/os-aggregates`` (admin): host aggregates with metadata and an availability zone.

Metadata keys ``cpu_allocation_ratio``, ``ram_allocation_ratio`` and ``disk_allocation_ratio`` override the
member hosts' own ratios (the claim statement reads them, so they bind every scheduler); they must be positive
numbers. After every change schedulers are told on the ``capacity`` fanout to reload aggregates.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import asyncpg
from aiohttp import web

from common import exceptions
from common.db import aggregates as db
from services.api.app import DB, RPC, ctx, require_admin
from services.api.compute.views import isotime_naive
from services.api.validation import json_body, shorten
from services.scheduler.rpcapi import SchedulerAPI

__all__ = ["aggregate_action", "create_aggregate", "delete_aggregate", "list_aggregates", "show_aggregate",
           "update_aggregate"]  # fmt: skip

LOG = logging.getLogger(__name__)

_NAME = {"type": "string", "minLength": 1, "maxLength": 255}
_AZ = {"type": ["string", "null"], "minLength": 1, "maxLength": 255}

CREATE: dict[str, Any] = {
    "type": "object",
    "required": ["aggregate"],
    "properties": {
        "aggregate": {
            "type": "object",
            "required": ["name"],
            "properties": {"name": _NAME, "availability_zone": _AZ},
            "additionalProperties": False,
        }
    },
    "additionalProperties": False,
}
UPDATE: dict[str, Any] = {
    "type": "object",
    "required": ["aggregate"],
    "properties": {
        "aggregate": {
            "type": "object",
            "properties": {"name": _NAME, "availability_zone": _AZ},
            "additionalProperties": False,
            "minProperties": 1,
        }
    },
    "additionalProperties": False,
}
_HOST = {"type": "object", "required": ["host"], "properties": {"host": _NAME}, "additionalProperties": False}
ACTION: dict[str, Any] = {
    "type": "object",
    "minProperties": 1,
    "maxProperties": 1,
    "properties": {
        "add_host": _HOST,
        "remove_host": _HOST,
        "set_metadata": {
            "type": "object",
            "required": ["metadata"],
            "properties": {
                "metadata": {
                    "type": "object",
                    "propertyNames": {"minLength": 1, "maxLength": 255},
                    # Stored as text; the ratio keys are bounded by _check_metadata.
                    "additionalProperties": {
                        "type": ["string", "null", "number"],
                        "maxLength": 255,
                        "$comment": "stored as text",
                    },
                }
            },
            "additionalProperties": False,
        },
    },
    "additionalProperties": False,
}


def _view(row: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "id": row["id"],
        "uuid": row["uuid"],
        "name": row["name"],
        "availability_zone": row["availability_zone"],
        "hosts": list(row["hosts"]),
        "metadata": row["metadata"] or {},
        "created_at": isotime_naive(row["created_at"]),
        "updated_at": isotime_naive(row["updated_at"]),
        "deleted": False,
        "deleted_at": None,
    }


def _aggregate_id(request: web.Request) -> int:
    raw = request.match_info["aggregate_id"]
    if not raw.isdigit() or int(raw) > 2**31 - 1:
        raise exceptions.NotFound(f"Aggregate {raw} could not be found.")
    return int(raw)


async def _get(conn: asyncpg.Connection, aggregate_id: int) -> asyncpg.Record:
    row = await db.get(conn, aggregate_id)
    if row is None:
        raise exceptions.NotFound(f"Aggregate {aggregate_id} could not be found.")
    return row


async def _announce(request: web.Request) -> None:
    """Tell every scheduler to reload (best effort: they also reload periodically)."""
    try:
        await SchedulerAPI(request.app[RPC]).refresh_aggregates(ctx(request))
    except exceptions.StratusError as e:
        LOG.warning("could not announce the aggregate change (schedulers reload periodically): %s", e.message)


async def list_aggregates(request: web.Request) -> web.Response:
    require_admin(request)
    rows = await request.app[DB].run(db.list_)
    return web.json_response({"aggregates": [_view(r) for r in rows]})


async def create_aggregate(request: web.Request) -> web.Response:
    require_admin(request)
    a = (await json_body(request))["aggregate"]
    row = await request.app[DB].run(
        lambda conn: db.create(conn, name=a["name"], availability_zone=a.get("availability_zone"))
    )
    if row is None:
        raise exceptions.Conflict(f"Aggregate {a['name']} already exists.")
    await _announce(request)
    return web.json_response({"aggregate": _view(row)})


async def show_aggregate(request: web.Request) -> web.Response:
    require_admin(request)
    agg_id = _aggregate_id(request)
    row = await request.app[DB].run(lambda conn: _get(conn, agg_id))
    return web.json_response({"aggregate": _view(row)})


async def update_aggregate(request: web.Request) -> web.Response:
    require_admin(request)
    agg_id = _aggregate_id(request)
    values = (await json_body(request))["aggregate"]

    async def work(conn: asyncpg.Connection) -> asyncpg.Record:
        await _get(conn, agg_id)
        try:
            async with conn.transaction():
                return await db.update(conn, agg_id, values)
        except asyncpg.UniqueViolationError:
            raise exceptions.Conflict(f"Aggregate {values.get('name')} already exists.") from None

    row = await request.app[DB].run(work)
    await _announce(request)
    return web.json_response({"aggregate": _view(row)})


async def delete_aggregate(request: web.Request) -> web.Response:
    require_admin(request)
    agg_id = _aggregate_id(request)

    async def work(conn: asyncpg.Connection) -> None:
        row = await _get(conn, agg_id)
        if row["hosts"]:
            raise exceptions.BadRequest(f"Aggregate {agg_id} still has hosts {list(row['hosts'])}; remove them first.")
        await db.delete(conn, agg_id)

    await request.app[DB].run(work)
    await _announce(request)
    return web.Response(status=200)


def _check_metadata(metadata: Mapping[str, Any]) -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for key, value in metadata.items():
        if value is None:
            out[key] = None
            continue
        value = str(value)
        if key in db.RATIO_KEYS and db.parse_ratio(value) is None:
            raise exceptions.BadRequest(
                f"Invalid input for field/attribute set_metadata/metadata/{key}: {shorten(value)} is not a positive "
                f"number in (0, {db.MAX_RATIO:g}]."
            )
        out[key] = value
    return out


async def aggregate_action(request: web.Request) -> web.Response:
    """POST /os-aggregates/{id}/action: add_host, remove_host or set_metadata."""
    require_admin(request)
    agg_id = _aggregate_id(request)
    body = await json_body(request)
    (action, args), = body.items()  # fmt: skip

    async def work(conn: asyncpg.Connection) -> asyncpg.Record:
        row = await _get(conn, agg_id)
        if action == "add_host":
            host = args["host"]
            if await conn.fetchval("SELECT 1 FROM compute_nodes WHERE host = $1", host) is None:
                raise exceptions.NotFound(f"Compute host {host} could not be found.")
            if not await db.add_host(conn, agg_id, host):
                raise exceptions.Conflict(f"Host {host} is already in aggregate {agg_id}.")
        elif action == "remove_host":
            if not await db.remove_host(conn, agg_id, args["host"]):
                raise exceptions.NotFound(f"Host {args['host']} is not in aggregate {agg_id}.")
        else:
            await db.set_metadata(conn, agg_id, _check_metadata(args["metadata"]))
        del row
        return await _get(conn, agg_id)

    row = await request.app[DB].run(work)
    await _announce(request)
    return web.json_response({"aggregate": _view(row)})
