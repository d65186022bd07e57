"""``/flavors`` and their extra specs."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

import asyncpg
from aiohttp import web

from common import exceptions
from common.context import RequestContext
from common.db import flavors as db
from services.api.app import CONF, DB, ctx, paginate, require_admin
from services.api.compute.servers import check_name
from services.api.compute.views import flavor_view
from services.api.routes import QUERY
from services.api.shapes import FLOAT4_MAX, INT4_MAX
from services.api.validation import json_body, shorten

__all__ = [
    "create_flavor",
    "create_extra_specs",
    "delete_extra_spec",
    "delete_flavor",
    "get_extra_spec",
    "list_extra_specs",
    "list_flavors",
    "show_flavor",
]


def _base(request: web.Request) -> str:
    return request.app[CONF].api.public_endpoint.rstrip("/")


def _is_public_filter(request: web.Request, c: RequestContext) -> bool | None:
    """Non-admins see public flavors only; admins choose (``is_public=None``/``all`` for both kinds)."""
    if not c.is_admin:
        return True
    raw = request.query.get("is_public", "true").lower()
    if raw in ("none", "all"):
        return None
    if raw in ("true", "1", "yes", "t", "on"):
        return True
    if raw in ("false", "0", "no", "f", "off"):
        return False
    raise exceptions.BadRequest(f"Invalid is_public filter [{raw}]")


async def list_flavors(request: web.Request) -> web.Response:
    c = ctx(request)
    detail = request.path.endswith("/detail")
    limit, marker = paginate(request.query)
    is_public = _is_public_filter(request, c)
    query = request[QUERY]  # typed and bounded by the route
    min_ram, min_disk = query.get("minRam"), query.get("minDisk")

    async def work(conn: asyncpg.Connection) -> list:
        if marker is not None and await db.get(conn, marker) is None:
            raise exceptions.BadRequest(f"marker [{marker}] not found")
        return await db.list_(conn, is_public=is_public, min_ram=min_ram, min_disk=min_disk, limit=limit, marker=marker)

    rows = await request.app[DB].run(work)
    base = _base(request)
    doc: dict[str, Any] = {"flavors": [flavor_view(r, base, detail=detail) for r in rows]}
    if limit and len(rows) == limit:
        params = [(k, v) for k, v in request.query.items() if k not in ("marker", "limit")]
        params += [("limit", str(limit)), ("marker", rows[-1]["id"])]
        path = "flavors/detail" if detail else "flavors"
        doc["flavors_links"] = [{"rel": "next", "href": f"{base}/compute/v2.1/{path}?{urlencode(params)}"}]
    return web.json_response(doc)


async def _visible(conn: asyncpg.Connection, c: RequestContext, flavor_id: str) -> asyncpg.Record:
    row = await db.get(conn, flavor_id)
    if row is None or (not row["is_public"] and not c.is_admin):
        raise exceptions.NotFound(f"Flavor {flavor_id} could not be found.")
    return row


async def show_flavor(request: web.Request) -> web.Response:
    c = ctx(request)
    fid = request.match_info["flavor_id"]
    row = await request.app[DB].run(lambda conn: _visible(conn, c, fid))
    return web.json_response({"flavor": flavor_view(row, _base(request))})


def _bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    low = str(value).lower()
    if low in ("true", "1", "yes", "t", "on"):
        return True
    if low in ("false", "0", "no", "f", "off"):
        return False
    raise exceptions.BadRequest(f"Invalid boolean {value!r} for os-flavor-access:is_public.")


def _int4(flavor: dict[str, Any], key: str) -> int:
    """``flavor[key]`` (a JSON integer or a string of digits; 0 when absent or empty) within an int4 column."""
    value = int(flavor.get(key) or 0)
    if value > INT4_MAX:
        raise exceptions.BadRequest(
            f"Invalid input for field/attribute flavor/{key}: {value} is greater than the maximum of {INT4_MAX}"
        )
    return value


async def create_flavor(request: web.Request) -> web.Response:
    """POST /flavors (admin). 200 with the flavor, as Nova answers."""
    require_admin(request)
    f = (await json_body(request))["flavor"]
    check_name(f["name"])
    try:
        rxtx = float(f.get("rxtx_factor", 1.0))
    except ValueError:
        raise exceptions.BadRequest(f"Invalid rxtx_factor {shorten(f['rxtx_factor'])}.") from None
    if not 0 < rxtx <= FLOAT4_MAX:  # a string's value (the schema bounds a number's); NaN fails too
        raise exceptions.BadRequest(
            f"Invalid input for field/attribute flavor/rxtx_factor: {rxtx} is not in (0, {FLOAT4_MAX}]."
        )
    values = {
        "name": f["name"],
        "flavor_id": None if f.get("id") in (None, "auto") else f["id"],
        "vcpus": _int4(f, "vcpus"),
        "ram_mb": _int4(f, "ram"),
        "disk_gb": _int4(f, "disk"),
        "ephemeral_gb": _int4(f, "OS-FLV-EXT-DATA:ephemeral"),
        "swap_mb": _int4(f, "swap"),
        "rxtx_factor": rxtx,
        "is_public": _bool(f.get("os-flavor-access:is_public", True)),
        "description": f.get("description"),
    }
    if values["vcpus"] < 1 or values["ram_mb"] < 1:
        raise exceptions.BadRequest("A flavor needs at least 1 vCPU and 1 MiB of RAM.")

    async def work(conn: asyncpg.Connection) -> asyncpg.Record:
        if await db.get_by_name(conn, values["name"]) is not None:
            raise exceptions.Conflict(f"Flavor with name {values['name']} already exists.")
        if values["flavor_id"] and await db.get(conn, values["flavor_id"]) is not None:
            raise exceptions.Conflict(f"Flavor with ID {values['flavor_id']} already exists.")
        return await db.create(conn, **values)

    try:
        row = await request.app[DB].run(work)
    except asyncpg.UniqueViolationError:
        raise exceptions.Conflict(f"Flavor {values['name']} already exists.") from None
    return web.json_response({"flavor": flavor_view(row, _base(request))})


async def delete_flavor(request: web.Request) -> web.Response:
    """202, as Nova. Servers keep their snapshot of the flavor."""
    require_admin(request)
    fid = request.match_info["flavor_id"]
    if not await request.app[DB].run(lambda conn: db.delete(conn, fid)):
        raise exceptions.NotFound(f"Flavor {fid} could not be found.")
    return web.Response(status=202)


async def list_extra_specs(request: web.Request) -> web.Response:
    c = ctx(request)
    fid = request.match_info["flavor_id"]
    row = await request.app[DB].run(lambda conn: _visible(conn, c, fid))
    return web.json_response({"extra_specs": row["extra_specs"] or {}})


async def get_extra_spec(request: web.Request) -> web.Response:
    c = ctx(request)
    fid, key = request.match_info["flavor_id"], request.match_info["key"]
    row = await request.app[DB].run(lambda conn: _visible(conn, c, fid))
    specs = row["extra_specs"] or {}
    if key not in specs:
        raise exceptions.NotFound(f"Flavor {fid} has no extra specs with key {key}.")
    return web.json_response({key: specs[key]})


async def create_extra_specs(request: web.Request) -> web.Response:
    """POST /flavors/{id}/os-extra_specs (admin): merge; values are stored as strings, as Nova does."""
    require_admin(request)
    fid = request.match_info["flavor_id"]
    specs = (await json_body(request))["extra_specs"]
    specs = {k: (str(v).lower() if isinstance(v, bool) else str(v)) for k, v in specs.items()}
    row = await request.app[DB].run(lambda conn: db.set_extra_specs(conn, fid, specs))
    if row is None:
        raise exceptions.NotFound(f"Flavor {fid} could not be found.")
    return web.json_response({"extra_specs": specs})


async def delete_extra_spec(request: web.Request) -> web.Response:
    require_admin(request)
    fid, key = request.match_info["flavor_id"], request.match_info["key"]
    if not await request.app[DB].run(lambda conn: db.unset_extra_spec(conn, fid, key)):
        raise exceptions.NotFound(f"Flavor {fid} has no extra specs with key {key}.")
    return web.Response(status=200)
