"""``/network/v2.0/security-groups`` and ``security-group-rules``: list, show, create, update, delete.

Every project has a 'default' group (derived id, made on first use: all egress, ingress from members of the
same group); ports without explicit groups are in it. Computes enforce the rules (services/compute/firewall.py).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import asyncpg
from aiohttp import web

from common import exceptions, netvalues
from common.context import RequestContext
from common.db import security_groups as db
from services.api.app import DB, ctx
from services.api.network.common import (
    body_of,
    check_attributes,
    delete_handler,
    list_response,
    owner_or_admin,
    parse_list_query,
    requested_project,
    scope,
    show_response,
    text,
    timestamp,
    validate_member,
)

__all__ = ["default_group", "validated_rule"]


GROUP_FILTERS = {
    "id": ("id", text),
    "name": ("name", text),
    "project_id": ("project_id", text),
    "tenant_id": ("project_id", text),
    "description": ("description", text),
}
RULE_FILTERS = {
    "id": ("id", text),
    "security_group_id": ("security_group_id", text),
    "direction": ("direction", text),
    "ethertype": ("ethertype", text),
    "project_id": ("project_id", text),
    "tenant_id": ("project_id", text),
    "protocol": ("protocol", text),
    "remote_group_id": ("remote_group_id", text),
}


_NAME = {"type": "string", "maxLength": 255}
GROUP_PROPERTIES = {"name": _NAME, "description": _NAME, "project_id": _NAME, "tenant_id": _NAME,
                    "stateful": {"type": "boolean"}}  # fmt: skip
_PORT = {"type": ["integer", "null"], "minimum": 0, "maximum": 65535}
RULE_PROPERTIES = {
    "security_group_id": _NAME,
    "direction": {"enum": ["ingress", "egress"]},
    "ethertype": {"enum": ["IPv4", "IPv6"]},
    "protocol": {"type": ["string", "integer", "null"], "maxLength": 32, "$comment": "stored as text"},
    "port_range_min": _PORT,
    "port_range_max": _PORT,
    "remote_ip_prefix": {"type": ["string", "null"], "maxLength": 64},
    "remote_group_id": {"type": ["string", "null"], "maxLength": 255},
    "remote_address_group_id": {"type": "null"},
    "description": _NAME,
    "project_id": _NAME,
    "tenant_id": _NAME,
}


def rule_view(r: Mapping[str, Any]) -> dict[str, Any]:
    prefix = str(r["remote_ip_prefix"]) if r["remote_ip_prefix"] is not None else None
    return {
        "id": r["id"],
        "security_group_id": r["security_group_id"],
        "direction": r["direction"],
        "ethertype": r["ethertype"],
        "protocol": r["protocol"],
        "port_range_min": r["port_range_min"],
        "port_range_max": r["port_range_max"],
        "remote_ip_prefix": prefix,
        "remote_group_id": r["remote_group_id"],
        "remote_address_group_id": None,
        "normalized_cidr": prefix,
        "description": r["description"],
        "tenant_id": r["project_id"],
        "project_id": r["project_id"],
        "belongs_to_default_sg": r["security_group_id"] == db.default_group_id(r["project_id"]),
        "created_at": timestamp(r["created_at"]),
        "updated_at": timestamp(r["updated_at"]),
        "revision_number": r["revision_number"],
    }


def group_view(g: Mapping[str, Any], rules: list[Mapping[str, Any]]) -> dict[str, Any]:
    return {
        "id": g["id"],
        "name": g["name"],
        "description": g["description"],
        "tenant_id": g["project_id"],
        "project_id": g["project_id"],
        "stateful": g["stateful"],
        "shared": False,
        "security_group_rules": [rule_view(r) for r in rules if r["security_group_id"] == g["id"]],
        "tags": [],
        "created_at": timestamp(g["created_at"]),
        "updated_at": timestamp(g["updated_at"]),
        "revision_number": g["revision_number"],
    }


def default_group(project_id: str) -> dict[str, Any]:
    """The rules a project's 'default' group starts with (for callers without a database at hand)."""
    gid = db.default_group_id(project_id)
    rules = [
        {"id": f"{gid}:{d}:{e}", "security_group_id": gid, "direction": d, "ethertype": e, "protocol": None,
         "port_range_min": None, "port_range_max": None, "remote_ip_prefix": None,
         "remote_group_id": gid if d == "ingress" else None}
        for d in ("egress", "ingress") for e in ("IPv4", "IPv6")
    ]  # fmt: skip
    return {"id": gid, "name": "default", "project_id": project_id, "security_group_rules": rules}


async def _projects(conn: asyncpg.Connection, c: RequestContext) -> list[str] | None:
    """Projects whose groups the caller sees (their own; an admin: None = all, after making every default)."""
    if scope(c) is None:
        for p in [c.project_id] if c.project_id else []:
            await db.ensure_default(conn, p)
        for r in await conn.fetch("SELECT id FROM projects ORDER BY id"):
            await db.ensure_default(conn, r["id"])
        return None
    return [c.project]


async def _visible_group(conn: asyncpg.Connection, c: RequestContext, group_id: str) -> asyncpg.Record:
    if c.project_id:
        await db.ensure_default(conn, c.project_id)
    g = await db.get_group(conn, group_id)
    if g is None or not (c.is_admin or g["project_id"] == c.project_id):
        raise exceptions.NotFound(f"Security group {group_id} does not exist")
    return g


def _matches(item: dict[str, Any], filters: dict[str, list[Any]]) -> bool:
    return all(item.get(col) in values for col, values in filters.items())


def _page(items: list[dict[str, Any]], limit: int | None, marker: str | None) -> list[dict[str, Any]]:
    if marker is not None:
        ids = [i["id"] for i in items]
        if marker not in ids:
            raise exceptions.NotFound(f"Marker {marker} was not found.")
        items = items[ids.index(marker) + 1 :]
    return items[:limit] if limit is not None else items


async def list_groups(request: web.Request) -> web.Response:
    c = ctx(request)
    lq = parse_list_query(request, GROUP_FILTERS)

    async def txn(conn: asyncpg.Connection) -> list[dict[str, Any]]:
        groups = await db.list_groups(conn, await _projects(conn, c))
        rules = await db.list_rules(conn, [g["id"] for g in groups])
        return [group_view(g, rules) for g in groups]

    groups = [] if lq.empty else await request.app[DB].run(txn)
    groups = _page([g for g in groups if _matches(g, lq.filters)], lq.limit, lq.marker)
    return list_response(request, "security_groups", groups, lq)


async def show_group(request: web.Request) -> web.Response:
    c = ctx(request)

    async def txn(conn: asyncpg.Connection) -> dict[str, Any]:
        g = await _visible_group(conn, c, request.match_info["group_id"])
        return group_view(g, await db.list_rules(conn, [g["id"]]))

    return show_response(request, "security_group", await request.app[DB].run(txn))


async def create_group(request: web.Request) -> web.Response:
    c = ctx(request)
    body = await body_of(request, "security_group")
    check_attributes(body, GROUP_PROPERTIES)
    validate_member("security_group", body, GROUP_PROPERTIES)
    project_id = requested_project(c, body)
    if body.get("name") == "default":
        raise exceptions.Conflict("Default security group already exists: a group cannot be named 'default'.")
    if body.get("stateful") is False:
        raise exceptions.BadRequest("Stateless security groups are not supported.")

    async def txn(conn: asyncpg.Connection) -> dict[str, Any]:
        g = await db.create_group(conn, project_id, body.get("name", ""), body.get("description", ""))
        return group_view(g, await db.list_rules(conn, [g["id"]]))

    return show_response(request, "security_group", await request.app[DB].run(txn), status=201)


async def update_group(request: web.Request) -> web.Response:
    c = ctx(request)
    body = await body_of(request, "security_group")
    check_attributes(body, ("name", "description"), ("id", "project_id", "tenant_id", "stateful"))
    validate_member("security_group", body, GROUP_PROPERTIES)

    async def txn(conn: asyncpg.Connection) -> dict[str, Any]:
        g = await _visible_group(conn, c, request.match_info["group_id"])
        owner_or_admin(c, g, f"security group {g['id']}")
        if g["name"] == "default" and body.get("name", "default") != "default":
            raise exceptions.Conflict("The default security group cannot be renamed.")
        g = await db.update_group(conn, g["id"], {k: body[k] for k in ("name", "description") if k in body})
        return group_view(g, await db.list_rules(conn, [g["id"]]))

    return show_response(request, "security_group", await request.app[DB].run(txn))


delete_group = delete_handler("group_id", "security group", _visible_group, db.delete_group)


async def list_rules(request: web.Request) -> web.Response:
    c = ctx(request)
    lq = parse_list_query(request, RULE_FILTERS)

    async def txn(conn: asyncpg.Connection) -> list[dict[str, Any]]:
        groups = await db.list_groups(conn, await _projects(conn, c))
        return [rule_view(r) for r in await db.list_rules(conn, [g["id"] for g in groups])]

    rules = [] if lq.empty else await request.app[DB].run(txn)
    rules = _page([r for r in rules if _matches(r, lq.filters)], lq.limit, lq.marker)
    return list_response(request, "security_group_rules", rules, lq)


async def show_rule(request: web.Request) -> web.Response:
    c = ctx(request)

    async def txn(conn: asyncpg.Connection) -> dict[str, Any]:
        if c.project_id:
            await db.ensure_default(conn, c.project_id)
        r = await db.get_rule(conn, request.match_info["rule_id"])
        if r is None or not (c.is_admin or r["project_id"] == c.project_id):
            raise exceptions.NotFound(f"Security group rule {request.match_info['rule_id']} does not exist")
        return rule_view(r)

    return show_response(request, "security_group_rule", await request.app[DB].run(txn))


def validated_rule(body: Mapping[str, Any]) -> dict[str, Any]:
    """A rule create request's attributes as the handler checks them (Neutron's attribute checks, the schema,
    then every value with ``common.netvalues``: direction, ethertype, protocol, port range or ICMP type and code,
    remote prefix or group), normalised for storage. ``BadRequest`` (400) naming the field otherwise.

    Whatever this accepts, the compute's firewall can render (tests/functional/network/test_render_property.py).
    """
    check_attributes(body, RULE_PROPERTIES)
    validate_member("security_group_rule", body, RULE_PROPERTIES)
    if "security_group_id" not in body:
        raise exceptions.BadRequest("Invalid input for operation: 'security_group_id' is required.")
    return netvalues.security_group_rule(body)


async def create_rule(request: web.Request) -> web.Response:
    c = ctx(request)
    body = await body_of(request, "security_group_rule")
    rule = validated_rule(body)

    async def txn(conn: asyncpg.Connection) -> dict[str, Any]:
        g = await _visible_group(conn, c, body["security_group_id"])
        owner_or_admin(c, g, f"security group {g['id']}")
        if rule.get("remote_group_id"):
            await _visible_group(conn, c, rule["remote_group_id"])
        return rule_view(await db.create_rule(conn, g, rule))

    return show_response(request, "security_group_rule", await request.app[DB].run(txn), status=201)


async def delete_rule(request: web.Request) -> web.Response:
    c = ctx(request)

    async def txn(conn: asyncpg.Connection) -> None:
        r = await db.get_rule(conn, request.match_info["rule_id"])
        if r is None or not (c.is_admin or r["project_id"] == c.project_id):
            raise exceptions.NotFound(f"Security group rule {request.match_info['rule_id']} does not exist")
        await db.delete_rule(conn, r["id"])

    await request.app[DB].run(txn)
    return web.Response(status=204)
