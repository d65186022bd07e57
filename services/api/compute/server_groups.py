"""``/os-server-groups``: affinity, anti-affinity and their soft variants.

Bodies in either shape are accepted: ``policies: [p]`` (microversion 2.1, what openstackclient sends here) and
``policy`` + ``rules`` (2.64, where ``max_server_per_host`` lives). Answers carry both shapes.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from aiohttp import web

from common import exceptions
from common.db import server_groups as db
from services.api.app import DB, ctx
from services.api.shapes import INT4_MAX
from services.api.validation import json_body

__all__ = ["SERVER_GROUP_CREATE", "create_server_group", "delete_server_group", "list_server_groups",
           "show_server_group"]  # fmt: skip

_POLICY = {"type": "string", "enum": list(db.POLICIES)}

SERVER_GROUP_CREATE: dict[str, Any] = {
    "type": "object",
    "required": ["server_group"],
    "properties": {
        "server_group": {
            "type": "object",
            "required": ["name"],
            "properties": {
                "name": {"type": "string", "minLength": 1, "maxLength": 255},
                "policies": {"type": "array", "items": _POLICY, "minItems": 1, "maxItems": 1},
                "policy": _POLICY,
                "rules": {
                    "type": "object",
                    "properties": {
                        "max_server_per_host": {
                            "type": ["integer", "string"],
                            "pattern": r"^[0-9]+$",
                            "maxLength": 9,
                            "minimum": 1,
                            "maximum": INT4_MAX,
                        }
                    },
                    "additionalProperties": False,
                },
            },
            "additionalProperties": False,
        }
    },
    "additionalProperties": False,
}


def _view(row: Mapping[str, Any], members: list[str]) -> dict[str, Any]:
    return {
        "id": row["id"],
        "name": row["name"],
        "policies": [row["policy"]],
        "policy": row["policy"],
        "rules": row["rules"] or {},
        "members": members,
        "metadata": {},
        "project_id": row["project_id"],
        "user_id": row["user_id"],
    }


async def create_server_group(request: web.Request) -> web.Response:
    c = ctx(request)
    g = (await json_body(request))["server_group"]
    policies = g.get("policies")
    policy = g.get("policy")
    if (policy is None) == (policies is None):
        raise exceptions.BadRequest("Give exactly one of 'policy' or 'policies' (a list of one policy).")
    policy = policy or policies[0]
    rules: dict[str, Any] = {}
    if g.get("rules"):
        if policy != "anti-affinity":
            raise exceptions.BadRequest(f"Rules are only valid with the anti-affinity policy, not {policy!r}.")
        rules["max_server_per_host"] = int(g["rules"]["max_server_per_host"])
        if rules["max_server_per_host"] < 1:
            raise exceptions.BadRequest("max_server_per_host must be at least 1.")
    row = await request.app[DB].run(
        lambda conn: db.create(
            conn, project_id=c.project, user_id=c.user_id, name=g["name"], policy=policy, rules=rules
        )
    )
    return web.json_response({"server_group": _view(row, [])})


async def list_server_groups(request: web.Request) -> web.Response:
    c = ctx(request)
    every = c.is_admin and request.query.get("all_projects", "").lower() in ("1", "true", "yes")

    async def work(conn: Any) -> tuple[list, dict[str, list[str]]]:
        rows = await db.list_(conn, None if every else c.project)
        return rows, await db.members(conn, [r["id"] for r in rows])

    rows, members = await request.app[DB].run(work)
    return web.json_response({"server_groups": [_view(r, members[r["id"]]) for r in rows]})


async def _visible(request: web.Request, conn: Any) -> Mapping[str, Any]:
    c = ctx(request)
    group_id = request.match_info["group_id"]
    row = await db.get(conn, group_id)
    if row is None or (row["project_id"] != c.project_id and not c.is_admin):
        raise exceptions.NotFound(f"Server group {group_id} could not be found.")
    return row


async def show_server_group(request: web.Request) -> web.Response:
    async def work(conn: Any) -> tuple[Mapping[str, Any], list[str]]:
        row = await _visible(request, conn)
        return row, (await db.members(conn, [row["id"]]))[row["id"]]

    row, members = await request.app[DB].run(work)
    return web.json_response({"server_group": _view(row, members)})


async def delete_server_group(request: web.Request) -> web.Response:
    async def work(conn: Any) -> None:
        row = await _visible(request, conn)
        await db.delete(conn, row["id"])

    await request.app[DB].run(work)
    return web.Response(status=204)
