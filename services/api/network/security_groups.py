"""``/network/v2.0/security-groups`` and ``security-group-rules``: read-only, one 'default' group per project.

Until per-port firewall rules land, every port is in its project's 'default' group, which Neutron's default
rules describe: all egress, and ingress from members of the same group. The group is derived from the
project id (no rows), so every API node answers the same; clients that look groups up (``server create``,
``port create --security-group default``) find it.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import asyncpg
from aiohttp import web

from common import exceptions
from common.context import RequestContext
from services.api.app import DB, ctx
from services.api.network.common import (
    default_sg_id,
    list_response,
    parse_list_query,
    show_response,
    text,
    timestamp,
)

__all__ = ["add_routes", "default_group"]

_EPOCH = datetime(2024, 1, 1, tzinfo=UTC)
_RULE_NAMESPACE = uuid.UUID("0c3a4f2e-8d7b-4e61-9a5c-2b1d3e4f5a6b")

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


def _rules(project_id: str, group_id: str) -> list[dict[str, Any]]:
    rules = []
    for direction in ("egress", "ingress"):
        for ethertype in ("IPv4", "IPv6"):
            rule_id = str(uuid.uuid5(_RULE_NAMESPACE, f"{group_id}:{direction}:{ethertype}"))
            rules.append(
                {
                    "id": rule_id,
                    "security_group_id": group_id,
                    "direction": direction,
                    "ethertype": ethertype,
                    "protocol": None,
                    "port_range_min": None,
                    "port_range_max": None,
                    "remote_ip_prefix": None,
                    "remote_group_id": group_id if direction == "ingress" else None,
                    "remote_address_group_id": None,
                    "normalized_cidr": None,
                    "description": "",
                    "tenant_id": project_id,
                    "project_id": project_id,
                    "belongs_to_default_sg": True,
                    "created_at": timestamp(_EPOCH),
                    "updated_at": timestamp(_EPOCH),
                    "revision_number": 0,
                }
            )
    return rules


def default_group(project_id: str) -> dict[str, Any]:
    """The 'default' security group of ``project_id`` as Neutron shows it."""
    group_id = default_sg_id(project_id)
    return {
        "id": group_id,
        "name": "default",
        "description": "Default security group",
        "tenant_id": project_id,
        "project_id": project_id,
        "stateful": True,
        "shared": False,
        "security_group_rules": _rules(project_id, group_id),
        "tags": [],
        "created_at": timestamp(_EPOCH),
        "updated_at": timestamp(_EPOCH),
        "revision_number": 0,
    }


async def _projects(request: web.Request, c: RequestContext) -> list[str]:
    """Projects whose default group the caller sees: their own; for an admin, every project."""
    own = [c.project_id] if c.project_id else []
    if not c.is_admin:
        return own

    async def txn(conn: asyncpg.Connection) -> list[str]:
        return [r["id"] for r in await conn.fetch("SELECT id FROM projects ORDER BY id")]

    return own + [p for p in await request.app[DB].run(txn) if p not in own]


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
    groups = [] if lq.empty else [default_group(p) for p in await _projects(request, c)]
    groups = _page([g for g in groups if _matches(g, lq.filters)], lq.limit, lq.marker)
    return list_response(request, "security_groups", groups, lq)


async def show_group(request: web.Request) -> web.Response:
    c = ctx(request)
    wanted = request.match_info["group_id"]
    for project_id in await _projects(request, c):
        if default_sg_id(project_id) == wanted:
            return show_response(request, "security_group", default_group(project_id))
    raise exceptions.NotFound(f"Security group {wanted} does not exist")


async def list_rules(request: web.Request) -> web.Response:
    c = ctx(request)
    lq = parse_list_query(request, RULE_FILTERS)
    projects = [] if lq.empty else await _projects(request, c)
    rules = [r for p in projects for r in default_group(p)["security_group_rules"]]
    rules = _page([r for r in rules if _matches(r, lq.filters)], lq.limit, lq.marker)
    return list_response(request, "security_group_rules", rules, lq)


async def show_rule(request: web.Request) -> web.Response:
    c = ctx(request)
    wanted = request.match_info["rule_id"]
    for project_id in await _projects(request, c):
        for rule in default_group(project_id)["security_group_rules"]:
            if rule["id"] == wanted:
                return show_response(request, "security_group_rule", rule)
    raise exceptions.NotFound(f"Security group rule {wanted} does not exist")


def add_routes(app: web.Application, prefix: str, wrap: Any) -> None:
    app.router.add_get(f"{prefix}/security-groups", wrap(list_groups))
    app.router.add_get(f"{prefix}/security-groups/{{group_id}}", wrap(show_group))
    app.router.add_get(f"{prefix}/security-group-rules", wrap(list_rules))
    app.router.add_get(f"{prefix}/security-group-rules/{{rule_id}}", wrap(show_rule))
