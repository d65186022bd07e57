"""``/identity/v3/auth/*``: issue, validate and inspect signed tokens; discovery documents."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import asyncpg
from aiohttp import web

from common import exceptions
from common.db import identity as db
from common.db.pool import Database
from services.api.app import CONF, DB, REVOCATIONS, SIGNER, ctx, public, unscoped_ok
from services.api.auth import TokenPayload
from services.api.identity import catalog as cat
from services.api.identity.views import project_view, token_body
from services.api.validation import json_body

__all__ = ["auth_catalog", "auth_projects", "check_token", "issue_token", "revoke_token", "validate_token"]

LOG = logging.getLogger(__name__)

_NAMED = {
    "type": "object",
    "properties": {
        "id": {"type": "string", "minLength": 1, "maxLength": 255},
        "name": {"type": "string", "minLength": 1, "maxLength": 255},
        "domain": {
            "type": "object",
            "properties": {"id": {"type": "string", "maxLength": 255}, "name": {"type": "string", "maxLength": 255}},
        },
    },
    "anyOf": [{"required": ["id"]}, {"required": ["name"]}],
}

AUTH_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["auth"],
    "properties": {
        "auth": {
            "type": "object",
            "required": ["identity"],
            "properties": {
                "identity": {
                    "type": "object",
                    "required": ["methods"],
                    "properties": {
                        "methods": {
                            "type": "array",
                            "minItems": 1,
                            "maxItems": 8,
                            "items": {"type": "string", "maxLength": 64},
                        },
                        "password": {
                            "type": "object",
                            "required": ["user"],
                            "properties": {
                                "user": {
                                    **_NAMED,
                                    "required": ["password"],
                                    "properties": {
                                        **_NAMED["properties"],
                                        "password": {"type": "string", "maxLength": 4096},
                                    },
                                }
                            },
                        },
                        "token": {
                            "type": "object",
                            "required": ["id"],
                            "properties": {"id": {"type": "string", "maxLength": 8192}},
                        },
                    },
                },
                "scope": {
                    "oneOf": [
                        {"type": "string", "enum": ["unscoped"]},
                        {
                            "type": "object",
                            "properties": {"project": _NAMED, "domain": {"type": "object"}, "system": {}},
                        },
                    ]
                },
            },
        }
    },
}

_AUTH_FAILED = "The request you have made requires authentication."
# A valid hash of a password nobody has: checked when the user does not exist (see _password_user).
_DUMMY_HASH = (
    "scrypt$16384$8$1$f227ab62949127deef1236d4b2d8dca5$5be0ddbc7e95bb5e64dcb4273d7a3a1e8370bf11e1a0c7f128d0df54ed0d327a"
)


def _check_domain(ref: dict[str, Any] | None, what: str) -> None:
    """Stratus has one domain; naming any other one fails like a wrong password would."""
    if not ref:
        return
    if ref.get("id") not in (None, db.DEFAULT_DOMAIN_ID) or (
        ref.get("name") is not None and ref["name"].lower() != db.DEFAULT_DOMAIN_ID
    ):
        raise exceptions.Unauthorized(f"Could not find domain {ref.get('id') or ref.get('name')!r} of the {what}.")


async def _password_user(db_: Database, creds: dict[str, Any]) -> asyncpg.Record:
    """The enabled user these credentials name; the hash is checked outside any transaction (it is slow)."""
    _check_domain(creds.get("domain"), "user")

    async def lookup(conn: asyncpg.Connection) -> asyncpg.Record | None:
        return await (db.get_user(conn, creds["id"]) if "id" in creds else db.get_user_by_name(conn, creds["name"]))

    user = await db_.run(lookup)
    # Check a hash even for an unknown user, so timing does not tell which user names exist.
    stored = user["password_hash"] if user is not None else _DUMMY_HASH
    ok = await asyncio.to_thread(db.verify_password, creds["password"], stored)
    if user is None or not ok or not user["enabled"]:
        raise exceptions.Unauthorized(_AUTH_FAILED)
    return user


async def _scope_project(
    conn: asyncpg.Connection, user: asyncpg.Record, scope: Any
) -> tuple[asyncpg.Record | None, list]:
    if scope is None and user["default_project_id"]:
        scope = {"project": {"id": user["default_project_id"]}}
    if scope is None or scope == "unscoped":
        return None, []
    if "project" not in scope:
        raise exceptions.Unauthorized("Only project scope is supported (no domain or system scope).")
    ref = scope["project"]
    _check_domain(ref.get("domain"), "project")
    project = await (db.get_project(conn, ref["id"]) if "id" in ref else db.get_project_by_name(conn, ref["name"]))
    if project is None or not project["enabled"]:
        raise exceptions.Unauthorized(f"Could not find project {ref.get('id') or ref.get('name')!r}.")
    roles = await db.roles_for(conn, user["id"], project["id"])
    if not roles:
        raise exceptions.Unauthorized(f"User {user['id']} has no access to project {project['id']}.")
    return project, roles


@public
async def issue_token(request: web.Request) -> web.Response:
    """POST /v3/auth/tokens: password or token method, optionally scoped to a project. 201 + X-Subject-Token."""
    body = await json_body(request)
    auth = body["auth"]
    identity = auth["identity"]
    methods = identity["methods"]
    signer = request.app[SIGNER]

    if "password" in methods and "password" in identity:
        user = await _password_user(request.app[DB], identity["password"]["user"])
    elif "token" in methods and "token" in identity:
        old = signer.verify(identity["token"]["id"])
        if request.app[REVOCATIONS].revoked(old):
            raise exceptions.Unauthorized("The token has been revoked.")
        user = await request.app[DB].run(lambda conn: db.get_user(conn, old.user_id))
        if user is None or not user["enabled"]:
            raise exceptions.Unauthorized(_AUTH_FAILED)
    else:
        raise exceptions.BadRequest(f"Unsupported authentication methods {methods}: use 'password' or 'token'.")
    project, roles = await request.app[DB].run(lambda conn: _scope_project(conn, user, auth.get("scope")))
    token, payload = signer.issue(
        user_id=user["id"],
        user_name=user["name"],
        project_id=project["id"] if project else None,
        project_name=project["name"] if project else None,
        roles=[r["name"] for r in roles],
    )
    LOG.info("issued a token for user %s on project %s", user["id"], project["id"] if project else "-")
    doc = token_body(payload, roles=roles, catalog=cat.build_catalog(request.app[CONF]), methods=methods)
    return web.json_response(doc, status=201, headers={"X-Subject-Token": token})


async def _subject(request: web.Request) -> TokenPayload:
    subject = request.headers.get("X-Subject-Token")
    if not subject:
        raise exceptions.BadRequest("The X-Subject-Token header is required.")
    try:
        payload = request.app[SIGNER].verify(subject)
    except exceptions.Unauthorized as e:
        raise exceptions.NotFound(f"Could not find token: {e.message}") from None
    if request.app[REVOCATIONS].revoked(payload):
        raise exceptions.NotFound("Could not find token: it has been revoked.")
    c = ctx(request)
    if not c.is_admin and c.user_id != payload.user_id:
        raise exceptions.Forbidden("Only an admin or the token's owner may validate it.")
    return payload


@unscoped_ok
async def validate_token(request: web.Request) -> web.Response:
    """GET /v3/auth/tokens: the subject token's document (signature and expiry checked; tokens are stateless)."""
    payload = await _subject(request)

    async def role_rows(conn: asyncpg.Connection) -> list:
        return await db.list_roles(conn, names=list(payload.roles))

    roles = await request.app[DB].run(role_rows) if payload.project_id else []
    doc = token_body(payload, roles=roles, catalog=cat.build_catalog(request.app[CONF]), methods=["password"])
    subject = request.headers["X-Subject-Token"]
    return web.json_response(doc, headers={"X-Subject-Token": subject})


@unscoped_ok
async def check_token(request: web.Request) -> web.Response:
    """HEAD /v3/auth/tokens."""
    await _subject(request)
    return web.Response(status=200)


@unscoped_ok
async def revoke_token(request: web.Request) -> web.Response:
    """DELETE /v3/auth/tokens: revoke the subject token (a revocation event naming its audit id; every API node
    refuses it within ``[api] revocation_refresh_interval``, this one at once). 204."""
    payload = await _subject(request)
    ttl = max(payload.expires_at - time.time(), 0.0) + 60
    event = await request.app[DB].run(
        lambda conn: db.revoke(conn, ttl=ttl, audit_id=payload.audit_id, user_id=None, reason="token revoked")
    )
    request.app[REVOCATIONS].learn([event])
    LOG.info("token %s of user %s revoked", payload.audit_id, payload.user_id)
    return web.Response(status=204)


@unscoped_ok
async def auth_projects(request: web.Request) -> web.Response:
    """GET /v3/auth/projects: the projects the caller may scope to."""
    c = ctx(request)
    base = request.app[CONF].api.public_endpoint.rstrip("/")

    async def work(conn: asyncpg.Connection) -> list:
        return await db.projects_for_user(conn, c.user_id)

    rows = await request.app[DB].run(work)
    return web.json_response(
        {
            "projects": [project_view(r, base) for r in rows],
            "links": {"self": f"{base}/identity/v3/auth/projects", "previous": None, "next": None},
        }
    )


async def auth_catalog(request: web.Request) -> web.Response:
    base = request.app[CONF].api.public_endpoint.rstrip("/")
    return web.json_response(
        {
            "catalog": cat.build_catalog(request.app[CONF]),
            "links": {"self": f"{base}/identity/v3/auth/catalog", "previous": None, "next": None},
        }
    )
