"""``/network/v2.0/networks``: list, show, create, update, delete."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import asyncpg
from aiohttp import web

from common import exceptions, netvalues
from common.context import RequestContext
from common.db import networks as db
from services.api.app import CONF, DB, ctx
from services.api.network.common import (
    body_of,
    check_attributes,
    delete_handler,
    list_response,
    owner_or_admin,
    parse_bool,
    parse_int,
    parse_list_query,
    requested_project,
    scope,
    show_response,
    text,
    timestamp,
    validate_member,
)

__all__ = ["network_view", "validated_values", "visible_network"]

FILTERS = {
    "id": ("id", text),
    "name": ("name", text),
    "description": ("description", text),
    "project_id": ("project_id", text),
    "tenant_id": ("project_id", text),
    "shared": ("shared", parse_bool),
    "router:external": ("external", parse_bool),
    "admin_state_up": ("admin_state_up", parse_bool),
    "status": ("status", text),
    "mtu": ("mtu", parse_int),
}

_NAME = {"type": "string", "maxLength": 255}
PROPERTIES: dict[str, Any] = {
    "name": _NAME,
    "description": _NAME,
    "admin_state_up": {"type": "boolean"},
    "shared": {"type": "boolean"},
    "project_id": {"type": "string", "minLength": 1, "maxLength": 255},
    "tenant_id": {"type": "string", "minLength": 1, "maxLength": 255},
    "mtu": {"type": "integer", "minimum": 68, "maximum": 9000},
    "router:external": {"type": "boolean"},
    "dns_domain": {"type": "string", "maxLength": 255},
    # Accepted at their only supported value, so clients that always send them keep working.
    "port_security_enabled": {"const": True},
    "availability_zone_hints": {"type": "array", "maxItems": 0},
    "is_default": {"const": False},
    "qos_policy_id": {"type": "null"},
}
CREATE_ATTRS = set(PROPERTIES)
UPDATE_ATTRS = CREATE_ATTRS - {"project_id", "tenant_id", "availability_zone_hints"}
READ_ONLY = {"id", "status", "subnets", "created_at", "updated_at", "revision_number", "project_id", "tenant_id"}


def network_view(row: Mapping[str, Any], subnet_ids: Sequence[str]) -> dict[str, Any]:
    """A ``networks`` row as Neutron shows a network."""
    return {
        "id": row["id"],
        "name": row["name"],
        "description": row["description"],
        "tenant_id": row["project_id"],
        "project_id": row["project_id"],
        "admin_state_up": row["admin_state_up"],
        "status": row["status"],
        "shared": row["shared"],
        "router:external": row["external"],
        "mtu": row["mtu"],
        "subnets": list(subnet_ids),
        "dns_domain": row["dns_domain"],
        "port_security_enabled": True,
        "availability_zone_hints": [],
        "availability_zones": [],
        "ipv4_address_scope": None,
        "ipv6_address_scope": None,
        "l2_adjacency": True,
        "qos_policy_id": None,
        "tags": [],
        "created_at": timestamp(row["created_at"]),
        "updated_at": timestamp(row["updated_at"]),
        "revision_number": row["revision_number"],
    }


async def visible_network(conn: asyncpg.Connection, c: RequestContext, network_id: str) -> asyncpg.Record:
    """The network if the caller may see it (own, shared, or admin); ``NotFound`` otherwise."""
    row = await db.get_network(conn, network_id)
    if row is None or not db.network_visible(row, scope(c)):
        raise exceptions.NotFound(f"Network {network_id} could not be found.")
    return row


async def _view(conn: asyncpg.Connection, row: Mapping[str, Any]) -> dict[str, Any]:
    return network_view(row, (await db.subnet_ids_by_network(conn, [row["id"]]))[row["id"]])


def validated_values(body: Mapping[str, Any]) -> dict[str, Any]:
    """A network create or update request's attributes after the schema, with every value that reaches dnsmasq
    or a command line checked by ``common.netvalues`` and normalised (``dns_domain``: an RFC 1123 name or "",
    ``mtu``); ``BadRequest`` (400) naming the field otherwise. Call after ``check_attributes``."""
    validate_member("network", body, PROPERTIES)
    values = dict(body)
    if "dns_domain" in values:
        values["dns_domain"] = netvalues.dns_domain(values["dns_domain"])
    if "mtu" in values:
        values["mtu"] = netvalues.mtu(values["mtu"])
    return values


def _admin_only(c: RequestContext, body: Mapping[str, Any]) -> None:
    for attr in ("shared", "router:external"):
        if body.get(attr) and not c.is_admin:
            raise exceptions.Forbidden(f"Policy doesn't allow setting {attr}: it needs the admin role.")


async def list_networks(request: web.Request) -> web.Response:
    c = ctx(request)
    lq = parse_list_query(request, FILTERS)
    if lq.empty:
        return list_response(request, "networks", [], lq)

    async def txn(conn: asyncpg.Connection) -> list[dict[str, Any]]:
        rows = await db.list_networks(conn, project_id=scope(c), filters=lq.filters, limit=lq.limit, marker=lq.marker)
        subnets = await db.subnet_ids_by_network(conn, [r["id"] for r in rows])
        return [network_view(r, subnets[r["id"]]) for r in rows]

    return list_response(request, "networks", await request.app[DB].run(txn), lq)


async def show_network(request: web.Request) -> web.Response:
    c = ctx(request)

    async def txn(conn: asyncpg.Connection) -> dict[str, Any]:
        return await _view(conn, await visible_network(conn, c, request.match_info["network_id"]))

    return show_response(request, "network", await request.app[DB].run(txn))


async def create_network(request: web.Request) -> web.Response:
    c = ctx(request)
    body = await body_of(request, "network")
    check_attributes(body, CREATE_ATTRS)
    body = validated_values(body)
    _admin_only(c, body)
    project_id = requested_project(c, body)
    conf = request.app[CONF]

    async def txn(conn: asyncpg.Connection) -> dict[str, Any]:
        row = await db.create_network(
            conn,
            project_id=project_id,
            name=body.get("name", ""),
            description=body.get("description", ""),
            shared=body.get("shared", False),
            external=body.get("router:external", False),
            admin_state_up=body.get("admin_state_up", True),
            mtu=body.get("mtu", 1500),
            dns_domain=body.get("dns_domain", ""),
            bridge_prefix=conf.network.bridge_prefix,
        )
        return network_view(row, [])

    return show_response(request, "network", await request.app[DB].run(txn), status=201)


async def update_network(request: web.Request) -> web.Response:
    c = ctx(request)
    body = await body_of(request, "network")
    check_attributes(body, UPDATE_ATTRS, READ_ONLY)
    body = validated_values(body)
    if "shared" in body and not c.is_admin:
        raise exceptions.Forbidden("Policy doesn't allow changing shared: it needs the admin role.")
    _admin_only(c, body)
    columns = {"router:external": "external"}
    values = {
        columns.get(k, k): v
        for k, v in body.items()
        if k in ("name", "description", "admin_state_up", "shared", "router:external", "mtu", "dns_domain")
    }

    async def txn(conn: asyncpg.Connection) -> dict[str, Any]:
        row = await visible_network(conn, c, request.match_info["network_id"])
        owner_or_admin(c, row, f"network {row['id']}")
        if values:
            row = await db.update_network(conn, row["id"], values)
        return await _view(conn, row)

    return show_response(request, "network", await request.app[DB].run(txn))


delete_network = delete_handler("network_id", "network", visible_network, db.delete_network)
