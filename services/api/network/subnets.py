"""``/network/v2.0/subnets``: list, show, create, update, delete (IPv4; addressing validated by ``ipam``)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import asyncpg
from aiohttp import web

from common import exceptions
from common.context import RequestContext
from common.db import networks as db
from services.api.app import DB, ctx
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
from services.api.network.networks import visible_network
from services.network import ipam

__all__ = ["create_plan", "subnet_view"]

FILTERS = {
    "id": ("id", text),
    "name": ("name", text),
    "description": ("description", text),
    "project_id": ("project_id", text),
    "tenant_id": ("project_id", text),
    "network_id": ("network_id", text),
    "cidr": ("cidr", text),
    "gateway_ip": ("gateway_ip", text),
    "ip_version": ("ip_version", parse_int),
    "enable_dhcp": ("enable_dhcp", parse_bool),
}
# Filters on extensions Stratus lacks: only their empty value matches anything.
NULL_FILTERS = ("subnetpool_id", "segment_id", "ipv6_ra_mode", "ipv6_address_mode")

_NAME = {"type": "string", "maxLength": 255}
_POOL = {
    "type": "object",
    "required": ["start", "end"],
    "properties": {"start": {"type": "string", "maxLength": 64}, "end": {"type": "string", "maxLength": 64}},
}
_ROUTE = {
    "type": "object",
    "required": ["destination", "nexthop"],
    "properties": {"destination": {"type": "string", "maxLength": 64}, "nexthop": {"type": "string", "maxLength": 64}},
}
PROPERTIES: dict[str, Any] = {
    "name": _NAME,
    "description": _NAME,
    "network_id": {"type": "string", "minLength": 1, "maxLength": 255},
    "project_id": {"type": "string", "minLength": 1, "maxLength": 255},
    "tenant_id": {"type": "string", "minLength": 1, "maxLength": 255},
    "ip_version": {"enum": [4]},
    "cidr": {"type": "string", "maxLength": 64},
    "gateway_ip": {"type": ["string", "null"], "maxLength": 64},
    "enable_dhcp": {"type": "boolean"},
    "allocation_pools": {"type": "array", "items": _POOL},
    "dns_nameservers": {"type": "array", "items": {"type": "string", "maxLength": 64}},
    "host_routes": {"type": "array", "items": _ROUTE},
    # Accepted at their only supported value, so clients that always send them keep working.
    "subnetpool_id": {"type": "null"},
    "use_default_subnet_pool": {"const": False},
    "ipv6_ra_mode": {"type": "null"},
    "ipv6_address_mode": {"type": "null"},
    "segment_id": {"type": "null"},
    "service_types": {"type": "array", "maxItems": 0},
    "dns_publish_fixed_ip": {"const": False},
}
CREATE_ATTRS = set(PROPERTIES)
UPDATE_ATTRS = {
    "name", "description", "gateway_ip", "enable_dhcp", "allocation_pools", "dns_nameservers", "host_routes",
    "service_types", "dns_publish_fixed_ip", "segment_id",
}  # fmt: skip
READ_ONLY = {
    "id", "network_id", "cidr", "ip_version", "project_id", "tenant_id", "created_at", "updated_at",
    "revision_number", "subnetpool_id",
}  # fmt: skip
_ADDRESSING = ("gateway_ip", "allocation_pools", "dns_nameservers", "host_routes")


def subnet_view(row: Mapping[str, Any]) -> dict[str, Any]:
    """A ``subnets`` row as Neutron shows a subnet."""
    gateway = row["gateway_ip"]
    return {
        "id": row["id"],
        "name": row["name"],
        "description": row["description"],
        "tenant_id": row["project_id"],
        "project_id": row["project_id"],
        "network_id": row["network_id"],
        "ip_version": row["ip_version"],
        "cidr": str(row["cidr"]),
        "gateway_ip": str(gateway).split("/")[0] if gateway is not None else None,
        "enable_dhcp": row["enable_dhcp"],
        "allocation_pools": list(row["allocation_pools"]),
        "dns_nameservers": list(row["dns_nameservers"]),
        "host_routes": list(row["host_routes"]),
        "subnetpool_id": None,
        "ipv6_ra_mode": None,
        "ipv6_address_mode": None,
        "segment_id": None,
        "service_types": [],
        "dns_publish_fixed_ip": False,
        "tags": [],
        "created_at": timestamp(row["created_at"]),
        "updated_at": timestamp(row["updated_at"]),
        "revision_number": row["revision_number"],
    }


def create_plan(body: Mapping[str, Any]) -> ipam.SubnetPlan:
    """A subnet create request as the handler checks it: Neutron's attribute checks, the schema, then
    ``ipam.plan_subnet`` (CIDR, gateway, pools, DNS servers, host routes, each normalised to canonical ASCII
    text: these reach dnsmasq's files). ``BadRequest`` (400) naming the field otherwise."""
    check_attributes(body, CREATE_ATTRS)
    validate_member("subnet", body, PROPERTIES)
    for required in ("network_id", "cidr"):
        if required not in body:
            raise exceptions.BadRequest(
                f"Invalid input for operation: '{required}' is required (subnet pools are not supported)."
            )
    return ipam.plan_subnet(
        body["cidr"],
        gateway_ip=body.get("gateway_ip", ipam.AUTO),
        allocation_pools=body.get("allocation_pools"),
        dns_nameservers=body.get("dns_nameservers", []),
        host_routes=body.get("host_routes", []),
        ip_version=body.get("ip_version", 4),
    )


async def _visible_subnet(conn: asyncpg.Connection, c: RequestContext, subnet_id: str) -> asyncpg.Record:
    row = await db.get_subnet(conn, subnet_id)
    if row is not None and (c.is_admin or row["project_id"] == c.project_id):
        return row
    if row is not None:
        network = await db.get_network(conn, row["network_id"])
        if network is not None and db.network_visible(network, scope(c)):
            return row
    raise exceptions.NotFound(f"Subnet {subnet_id} could not be found.")


async def list_subnets(request: web.Request) -> web.Response:
    c = ctx(request)
    lq = parse_list_query(request, FILTERS, extra=NULL_FILTERS)
    if lq.empty or any(v for values in lq.extra.values() for v in values):
        return list_response(request, "subnets", [], lq)

    async def txn(conn: asyncpg.Connection) -> list[dict[str, Any]]:
        rows = await db.list_subnets(conn, project_id=scope(c), filters=lq.filters, limit=lq.limit, marker=lq.marker)
        return [subnet_view(r) for r in rows]

    return list_response(request, "subnets", await request.app[DB].run(txn), lq)


async def show_subnet(request: web.Request) -> web.Response:
    c = ctx(request)

    async def txn(conn: asyncpg.Connection) -> dict[str, Any]:
        return subnet_view(await _visible_subnet(conn, c, request.match_info["subnet_id"]))

    return show_response(request, "subnet", await request.app[DB].run(txn))


async def create_subnet(request: web.Request) -> web.Response:
    c = ctx(request)
    body = await body_of(request, "subnet")
    plan = create_plan(body)
    explicit_project = requested_project(c, body) if ("project_id" in body or "tenant_id" in body) else None

    async def txn(conn: asyncpg.Connection) -> dict[str, Any]:
        network = await visible_network(conn, c, body["network_id"])
        owner_or_admin(c, network, f"network {network['id']}")
        row = await db.create_subnet(
            conn,
            network_id=network["id"],
            project_id=explicit_project or network["project_id"],
            plan=plan,
            name=body.get("name", ""),
            description=body.get("description", ""),
            enable_dhcp=body.get("enable_dhcp", True),
        )
        return subnet_view(row)

    return show_response(request, "subnet", await request.app[DB].run(txn), status=201)


async def update_subnet(request: web.Request) -> web.Response:
    c = ctx(request)
    body = await body_of(request, "subnet")
    check_attributes(body, UPDATE_ATTRS, READ_ONLY)
    validate_member("subnet", body, PROPERTIES)
    plain = {k: v for k, v in body.items() if k in ("name", "description", "enable_dhcp")}

    async def txn(conn: asyncpg.Connection) -> dict[str, Any]:
        row = await _visible_subnet(conn, c, request.match_info["subnet_id"])
        owner_or_admin(c, row, f"subnet {row['id']}")
        plan = None
        if any(k in body for k in _ADDRESSING):
            current = subnet_view(row)
            plan = ipam.plan_subnet(
                current["cidr"],
                gateway_ip=body.get("gateway_ip", current["gateway_ip"]),
                allocation_pools=body.get("allocation_pools", current["allocation_pools"]),
                dns_nameservers=body.get("dns_nameservers", current["dns_nameservers"]),
                host_routes=body.get("host_routes", current["host_routes"]),
            )
        updated = await db.update_subnet(conn, row["id"], plain, plan)
        return subnet_view(updated)

    return show_response(request, "subnet", await request.app[DB].run(txn))


delete_subnet = delete_handler("subnet_id", "subnet", _visible_subnet, db.delete_subnet)
