"""Identity v3 (Keystone-compatible subset) under ``/identity`` and ``/identity/v3``.

Password and token authentication, project scope, a catalog pointing at this API's other services; tokens are
signed (``services.api.auth.TokenSigner``), so every API node validates them without shared state.
Errors use Keystone's ``{"error": {"code", "message", "title"}}`` shape, which keystoneauth parses.
``ROUTES`` is the Identity part of the route table (``services.api.routes``).
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from common import exceptions
from services.api import routes
from services.api.app import CONF, public
from services.api.identity import resources, tokens
from services.api.identity.catalog import identity_version, identity_versions
from services.api.routes import Param, Route
from services.api.shapes import (
    BOOL,
    ID,
    INT,
    LINKS,
    NULL,
    OBJ,
    STR,
    TEXT,
    arr,
    nullable,
    obj,
    text,
)

__all__ = ["API", "ROUTES", "add_routes"]

V3 = "/identity/v3"


def keystone_error(e: exceptions.StratusError) -> dict[str, Any]:
    """Keystone's error body; the title is the exception's class name (``Unauthorized``), as Keystone's is."""
    title = type(e).__name__ if type(e).__module__ == exceptions.__name__ else e.title
    return {"error": {"code": e.code, "message": e.message, "title": title}}


KEYSTONE_ERROR = obj(
    {"error": obj({"code": INT, "message": STR, "title": STR}, required=("code", "message", "title"))},
    required=("error",),
)
API = routes.Api(
    name="identity",
    prefix="/identity",
    title="Identity v3 (Keystone); errors {error: {code, message, title}}",
    error_body=keystone_error,
    error_schema=KEYSTONE_ERROR,
)


@public
async def versions(request: web.Request) -> web.Response:
    """The Identity API versions (keystoneauth's discovery)."""
    return web.json_response(identity_versions(request.app[CONF].api.public_endpoint.rstrip("/")))


@public
async def version(request: web.Request) -> web.Response:
    """The v3 version document."""
    return web.json_response({"version": identity_version(request.app[CONF].api.public_endpoint.rstrip("/"))})


# ----- response shapes ----------------------------------------------------------------------------------------

_VERSION = obj({"id": STR, "status": STR, "updated": STR, "links": LINKS, "media-types": arr(OBJ)},
               required=("id", "status", "links"))  # fmt: skip
_SELF = obj({"self": STR}, required=("self",))
_DOMAIN_REF = obj({"id": STR, "name": STR})
_ENDPOINT = obj({"id": STR, "interface": STR, "region": STR, "region_id": STR, "url": STR})
CATALOG = arr(obj({"id": STR, "type": STR, "name": STR, "endpoints": arr(_ENDPOINT)}))
TOKEN = obj(
    {
        "token": obj(
            {
                "methods": arr(STR),
                "user": obj({"id": STR, "name": STR, "domain": _DOMAIN_REF, "password_expires_at": NULL}),
                "audit_ids": arr(STR),
                "issued_at": STR,
                "expires_at": STR,
                "project": obj({"id": STR, "name": nullable(STR), "domain": _DOMAIN_REF}),
                "is_domain": BOOL,
                "roles": arr(obj({"id": STR, "name": STR})),
                "catalog": CATALOG,
            },
            required=("methods", "user", "audit_ids", "issued_at", "expires_at"),
        )
    },
    required=("token",),
)
PROJECT = obj(
    {"id": STR, "name": STR, "description": STR, "domain_id": STR, "enabled": BOOL, "is_domain": BOOL,
     "parent_id": STR, "tags": arr(STR), "options": OBJ, "links": _SELF},
    required=("id", "name", "domain_id", "enabled", "links"),
)  # fmt: skip
USER = obj(
    {"id": STR, "name": STR, "domain_id": STR, "enabled": BOOL, "password_expires_at": NULL, "options": OBJ,
     "links": _SELF, "default_project_id": STR},
    required=("id", "name", "domain_id", "enabled", "links"),
)  # fmt: skip
ROLE = obj({"id": STR, "name": STR, "domain_id": NULL, "description": NULL, "options": OBJ, "links": _SELF},
           required=("id", "name", "links"))  # fmt: skip
DOMAIN = obj({"id": STR, "name": STR, "description": STR, "enabled": BOOL, "tags": arr(STR), "options": OBJ,
              "links": _SELF}, required=("id", "name", "enabled"))  # fmt: skip
_ASSIGNMENT = obj(
    {
        "user": obj({"id": STR, "name": STR, "domain": _DOMAIN_REF}, required=("id",)),
        "scope": obj({"project": obj({"id": STR, "name": STR, "domain": _DOMAIN_REF}, required=("id",))}),
        "role": obj({"id": STR, "name": STR}, required=("id",)),
        "links": obj({"assignment": STR}),
    },
    required=("user", "scope", "role"),
)
_PAGE_LINKS = obj({"self": STR, "previous": NULL, "next": NULL}, required=("self",))


def _collection(key: str, item: dict[str, Any]) -> dict[str, Any]:
    return obj({key: arr(item), "links": _PAGE_LINKS}, required=(key, "links"))


def _one(key: str, item: dict[str, Any]) -> dict[str, Any]:
    return obj({key: item}, required=(key,))


# ----- the table ----------------------------------------------------------------------------------------------

_SUBJECT = {"X-Subject-Token": Param(text(4096), "The token to validate or check")}
_NAME = {"name": Param(TEXT, "Only the one with this name")}
P, U, R = {"project_id": ID}, {"user_id": ID}, {"role_id": ID}
ROUTES: list[Route] = [
    Route("POST", "/auth/tokens", tokens.issue_token, "Issue a token (password or token method)",
          {201: TOKEN}, body=tokens.AUTH_SCHEMA),
    Route("GET", "/auth/tokens", tokens.validate_token, "Validate a token", {200: TOKEN}, headers=_SUBJECT),
    Route("HEAD", "/auth/tokens", tokens.check_token, "Check a token", {200: None}, headers=_SUBJECT),
    Route("DELETE", "/auth/tokens", tokens.revoke_token, "Revoke a token (not possible: 409 says why)", {},
          headers=_SUBJECT),
    Route("GET", "/auth/projects", tokens.auth_projects, "Projects the caller may scope to",
          {200: _collection("projects", PROJECT)}),
    Route("GET", "/auth/catalog", tokens.auth_catalog, "The service catalog",
          {200: obj({"catalog": CATALOG, "links": _PAGE_LINKS}, required=("catalog",))}),
    Route("GET", "/projects", resources.list_projects, "List projects", {200: _collection("projects", PROJECT)},
          query=_NAME),
    Route("POST", "/projects", resources.create_project, "Create a project", {201: _one("project", PROJECT)},
          body=resources.PROJECT_SCHEMA, admin_only=True),
    Route("GET", "/projects/{project_id}", resources.get_project, "Show a project", {200: _one("project", PROJECT)},
          P),
    Route("GET", "/projects/{project_id}/users/{user_id}/roles", resources.list_user_project_roles,
          "A user's roles on a project", {200: _collection("roles", ROLE)}, {**P, **U}),
    Route("PUT", "/projects/{project_id}/users/{user_id}/roles/{role_id}", resources.grant_role, "Grant a role",
          {204: None}, {**P, **U, **R}, admin_only=True),
    Route("HEAD", "/projects/{project_id}/users/{user_id}/roles/{role_id}", resources.check_role,
          "Check a role assignment", {204: None}, {**P, **U, **R}, admin_only=True),
    Route("DELETE", "/projects/{project_id}/users/{user_id}/roles/{role_id}", resources.revoke_role,
          "Revoke a role", {204: None}, {**P, **U, **R}, admin_only=True),
    Route("GET", "/users", resources.list_users, "List users", {200: _collection("users", USER)}, query=_NAME,
          admin_only=True),
    Route("POST", "/users", resources.create_user, "Create a user", {201: _one("user", USER)},
          body=resources.USER_SCHEMA, admin_only=True),
    Route("GET", "/users/{user_id}", resources.get_user, "Show a user", {200: _one("user", USER)}, U),
    Route("GET", "/users/{user_id}/projects", resources.list_user_projects, "A user's projects",
          {200: _collection("projects", PROJECT)}, U),
    Route("GET", "/roles", resources.list_roles, "List roles", {200: _collection("roles", ROLE)}, query=_NAME),
    Route("POST", "/roles", resources.create_role, "Create a role", {201: _one("role", ROLE)},
          body=resources.ROLE_SCHEMA, admin_only=True),
    Route("GET", "/roles/{role_id}", resources.get_role, "Show a role", {200: _one("role", ROLE)}, R),
    Route("GET", "/role_assignments", resources.list_role_assignments, "List role assignments",
          {200: _collection("role_assignments", _ASSIGNMENT)},
          query={"user.id": Param(ID), "scope.project.id": Param(ID), "role.id": Param(ID),
                 "include_names": Param(text(16), "Show names next to ids")}),
    Route("GET", "/domains", resources.list_domains, "List domains (there is one)",
          {200: _collection("domains", DOMAIN)}, query=_NAME),
    Route("GET", "/domains/{domain_id}", resources.get_domain, "Show the domain", {200: _one("domain", DOMAIN)},
          {"domain_id": ID}),
]  # fmt: skip


def add_routes(app: web.Application) -> None:
    """Register the version documents and ``ROUTES`` under ``/identity/v3``."""
    from dataclasses import replace

    versions_doc = obj({"versions": obj({"values": arr(_VERSION)}, required=("values",))}, required=("versions",))
    version_doc = _one("version", _VERSION)
    docs = [
        Route("GET", "/identity", versions, "Identity API versions", {200: versions_doc}),
        Route("GET", "/identity/", versions, "Identity API versions", {200: versions_doc}),
        Route("GET", V3, version, "The v3 version document", {200: version_doc}),
        Route("GET", V3 + "/", version, "The v3 version document", {200: version_doc}),
    ]
    routes.register(app, API, docs + [replace(route, path=V3 + route.path) for route in ROUTES])
