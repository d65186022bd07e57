"""``/identity/v3`` projects, users, roles, role assignments and the one domain."""

from __future__ import annotations

import logging
from typing import Any

import asyncpg
from aiohttp import web

from common import exceptions
from common.db import identity as db
from services.api.app import CONF, DB, REVOCATIONS, ctx, require_admin, unscoped_ok
from services.api.identity.views import domain_view, project_view, role_view, user_view
from services.api.validation import json_body, shorten

__all__ = [
    "check_role",
    "create_project",
    "create_role",
    "create_user",
    "get_domain",
    "get_project",
    "get_role",
    "get_user",
    "grant_role",
    "list_domains",
    "list_projects",
    "list_role_assignments",
    "list_roles",
    "list_user_project_roles",
    "list_user_projects",
    "list_users",
    "revoke_role",
]

LOG = logging.getLogger(__name__)

_DOMAIN_ID = {"type": "string", "enum": [db.DEFAULT_DOMAIN_ID]}
_NAME = {"type": "string", "minLength": 1, "maxLength": 255}

PROJECT_SCHEMA = {
    "type": "object",
    "required": ["project"],
    "properties": {
        "project": {
            "type": "object",
            "required": ["name"],
            "properties": {
                "name": _NAME,
                "description": {"type": ["string", "null"], "maxLength": 65535},
                "domain_id": _DOMAIN_ID,
                "parent_id": {"type": ["string", "null"], "enum": [db.DEFAULT_DOMAIN_ID, None]},
                "enabled": {"type": "boolean"},
                "is_domain": {"const": False},
            },
        }
    },
}

USER_SCHEMA = {
    "type": "object",
    "required": ["user"],
    "properties": {
        "user": {
            "type": "object",
            "required": ["name", "password"],
            "properties": {
                "name": _NAME,
                "password": {"type": "string", "minLength": 1, "maxLength": 4096},
                "default_project_id": {"type": ["string", "null"], "minLength": 1, "maxLength": 255},
                "domain_id": _DOMAIN_ID,
                "enabled": {"type": "boolean"},
            },
        }
    },
}

ROLE_SCHEMA = {
    "type": "object",
    "required": ["role"],
    "properties": {"role": {"type": "object", "required": ["name"], "properties": {"name": _NAME}}},
}


def _base(request: web.Request) -> str:
    return request.app[CONF].api.public_endpoint.rstrip("/")


def _collection(request: web.Request, key: str, items: list[dict[str, Any]]) -> web.Response:
    return web.json_response(
        {key: items, "links": {"self": f"{_base(request)}{request.path}", "previous": None, "next": None}}
    )


async def _run(request: web.Request, fn: Any) -> Any:
    return await request.app[DB].run(fn)


# ----- projects -----------------------------------------------------------------------------------------------


async def list_projects(request: web.Request) -> web.Response:
    """Admins see every project; others the projects they hold a role in."""
    c = ctx(request)
    name = request.query.get("name")
    if c.is_admin:
        rows = await _run(request, lambda conn: db.list_projects(conn, name=name))
    else:
        rows = await _run(request, lambda conn: db.projects_for_user(conn, c.user_id))
        rows = [r for r in rows if name is None or r["name"] == name]
    return _collection(request, "projects", [project_view(r, _base(request)) for r in rows])


async def get_project(request: web.Request) -> web.Response:
    c = ctx(request)
    pid = request.match_info["project_id"]
    row = await _run(request, lambda conn: db.get_project(conn, pid))
    if row is None or (not c.is_admin and pid != c.project_id):
        raise exceptions.NotFound(f"Could not find project: {pid}.")
    return web.json_response({"project": project_view(row, _base(request))})


async def create_project(request: web.Request) -> web.Response:
    require_admin(request)
    p = (await json_body(request))["project"]
    try:
        row = await _run(
            request,
            lambda conn: db.create_project(
                conn, name=p["name"], description=p.get("description") or "", enabled=p.get("enabled", True)
            ),
        )
    except asyncpg.UniqueViolationError:
        raise exceptions.Conflict(f"Conflict occurred attempting to store project: {p['name']!r} exists.") from None
    return web.json_response({"project": project_view(row, _base(request))}, status=201)


# ----- users --------------------------------------------------------------------------------------------------


async def list_users(request: web.Request) -> web.Response:
    require_admin(request)
    name = request.query.get("name")
    rows = await _run(request, lambda conn: db.list_users(conn, name=name))
    return _collection(request, "users", [user_view(r, _base(request)) for r in rows])


@unscoped_ok
async def get_user(request: web.Request) -> web.Response:
    c = ctx(request)
    uid = request.match_info["user_id"]
    row = await _run(request, lambda conn: db.get_user(conn, uid))
    if row is None or (not c.is_admin and uid != c.user_id):
        raise exceptions.NotFound(f"Could not find user: {uid}.")
    return web.json_response({"user": user_view(row, _base(request))})


async def create_user(request: web.Request) -> web.Response:
    require_admin(request)
    u = (await json_body(request))["user"]

    async def work(conn: asyncpg.Connection) -> asyncpg.Record:
        pid = u.get("default_project_id")
        if pid is not None and await db.get_project(conn, pid) is None:  # the column references projects
            raise exceptions.BadRequest(f"Could not find project: {shorten(pid)}.")
        return await db.create_user(
            conn, name=u["name"], password=u["password"], default_project_id=pid, enabled=u.get("enabled", True)
        )

    try:
        row = await _run(request, work)
    except asyncpg.UniqueViolationError:
        raise exceptions.Conflict(f"Conflict occurred attempting to store user: {u['name']!r} exists.") from None
    return web.json_response({"user": user_view(row, _base(request))}, status=201)


@unscoped_ok
async def list_user_projects(request: web.Request) -> web.Response:
    """GET /v3/users/{id}/projects: for the user themself or an admin."""
    c = ctx(request)
    uid = request.match_info["user_id"]
    if not c.is_admin and uid != c.user_id:
        raise exceptions.Forbidden("You may list only your own projects.")
    rows = await _run(request, lambda conn: db.projects_for_user(conn, uid))
    return _collection(request, "projects", [project_view(r, _base(request)) for r in rows])


# ----- roles --------------------------------------------------------------------------------------------------


async def list_roles(request: web.Request) -> web.Response:
    name = request.query.get("name")
    rows = await _run(request, lambda conn: db.list_roles(conn, names=[name] if name is not None else None))
    return _collection(request, "roles", [role_view(r, _base(request)) for r in rows])


async def get_role(request: web.Request) -> web.Response:
    rid = request.match_info["role_id"]
    row = await _run(request, lambda conn: db.get_role(conn, rid))
    if row is None:
        raise exceptions.NotFound(f"Could not find role: {rid}.")
    return web.json_response({"role": role_view(row, _base(request))})


async def create_role(request: web.Request) -> web.Response:
    require_admin(request)
    name = (await json_body(request))["role"]["name"]

    async def work(conn: asyncpg.Connection) -> asyncpg.Record:
        if await db.get_role_by_name(conn, name) is not None:
            raise exceptions.Conflict(f"Conflict occurred attempting to store role: {name!r} exists.")
        return await db.create_role(conn, name)

    row = await _run(request, work)
    return web.json_response({"role": role_view(row, _base(request))}, status=201)


async def _assignment_refs(conn: asyncpg.Connection, request: web.Request) -> tuple[str, str, str | None]:
    pid, uid = request.match_info["project_id"], request.match_info["user_id"]
    if await db.get_project(conn, pid) is None:
        raise exceptions.NotFound(f"Could not find project: {pid}.")
    if await db.get_user(conn, uid) is None:
        raise exceptions.NotFound(f"Could not find user: {uid}.")
    rid = request.match_info.get("role_id")
    if rid is not None and await db.get_role(conn, rid) is None:
        raise exceptions.NotFound(f"Could not find role: {rid}.")
    return pid, uid, rid


async def grant_role(request: web.Request) -> web.Response:
    """PUT /v3/projects/{p}/users/{u}/roles/{r}: idempotent."""
    require_admin(request)

    async def work(conn: asyncpg.Connection) -> None:
        pid, uid, rid = await _assignment_refs(conn, request)
        await db.assign_role(conn, user_id=uid, project_id=pid, role_id=rid)

    await _run(request, work)
    return web.Response(status=204)


async def revoke_role(request: web.Request) -> web.Response:
    """DELETE /v3/projects/{p}/users/{u}/roles/{r}: the assignment goes, and with it every token the user holds
    on that project (a revocation event, in the same transaction): they carry the role in their signed body."""
    require_admin(request)
    ttl = request.app[CONF].api.token_ttl

    async def work(conn: asyncpg.Connection) -> asyncpg.Record:
        pid, uid, rid = await _assignment_refs(conn, request)
        if not await db.unassign_role(conn, user_id=uid, project_id=pid, role_id=rid):
            raise exceptions.NotFound(f"User {uid} does not hold role {rid} on project {pid}.")
        return await db.revoke(conn, ttl=ttl, user_id=uid, project_id=pid, reason=f"role {rid} removed")

    event = await _run(request, work)
    request.app[REVOCATIONS].learn([event])
    LOG.info("role %s of user %s on project %s removed; the user's tokens on it are revoked",
             event["reason"].split()[1], event["user_id"], event["project_id"])  # fmt: skip
    return web.Response(status=204)


async def check_role(request: web.Request) -> web.Response:
    """HEAD /v3/projects/{p}/users/{u}/roles/{r}: 204 when granted, 404 otherwise."""
    require_admin(request)

    async def work(conn: asyncpg.Connection) -> bool:
        pid, uid, rid = await _assignment_refs(conn, request)
        return any(r["id"] == rid for r in await db.roles_for(conn, uid, pid))

    if not await _run(request, work):
        raise exceptions.NotFound("Role assignment not found.")
    return web.Response(status=204)


async def list_user_project_roles(request: web.Request) -> web.Response:
    c = ctx(request)
    if not c.is_admin and request.match_info["user_id"] != c.user_id:
        raise exceptions.Forbidden("You may list only your own role assignments.")

    async def work(conn: asyncpg.Connection) -> list:
        pid, uid, _ = await _assignment_refs(conn, request)
        return await db.roles_for(conn, uid, pid)

    rows = await _run(request, work)
    return _collection(request, "roles", [role_view(r, _base(request)) for r in rows])


# ----- domains ------------------------------------------------------------------------------------------------


async def list_domains(request: web.Request) -> web.Response:
    name = request.query.get("name")
    items = [domain_view(_base(request))]
    if name is not None and name.lower() != db.DEFAULT_DOMAIN_ID:
        items = []
    return _collection(request, "domains", items)


async def get_domain(request: web.Request) -> web.Response:
    did = request.match_info["domain_id"]
    if did.lower() != db.DEFAULT_DOMAIN_ID:
        raise exceptions.NotFound(f"Could not find domain: {did}.")
    return web.json_response({"domain": domain_view(_base(request))})


async def list_role_assignments(request: web.Request) -> web.Response:
    """GET /v3/role_assignments (project scope only): admins see all, others their own."""
    c = ctx(request)
    q = request.query
    user_id = q.get("user.id")
    if not c.is_admin:
        if user_id not in (None, c.user_id):
            raise exceptions.Forbidden("You may list only your own role assignments.")
        user_id = c.user_id
    names = "include_names" in q and q["include_names"].lower() not in ("0", "false", "no")
    rows = await _run(
        request,
        lambda conn: db.list_assignments(
            conn, user_id=user_id, project_id=q.get("scope.project.id"), role_id=q.get("role.id")
        ),
    )
    base = _base(request)
    domain = {"id": db.DEFAULT_DOMAIN_ID, "name": db.DEFAULT_DOMAIN_NAME}
    items = []
    for r in rows:
        user: dict[str, Any] = {"id": r["user_id"]}
        project: dict[str, Any] = {"id": r["project_id"]}
        role: dict[str, Any] = {"id": r["role_id"]}
        if names:
            user.update(name=r["user_name"], domain=domain)
            project.update(name=r["project_name"], domain=domain)
            role["name"] = r["role_name"]
        link = f"{base}/identity/v3/projects/{r['project_id']}/users/{r['user_id']}/roles/{r['role_id']}"
        items.append({"user": user, "scope": {"project": project}, "role": role, "links": {"assignment": link}})
    return _collection(request, "role_assignments", items)
