"""Identity v3 (Keystone-compatible subset) under ``/identity`` and ``/identity/v3``.

Password and token authentication, project scope, a catalog pointing at this API's other services; tokens are
signed (``services.api.auth.TokenSigner``), so every API node validates them without shared state.
Errors use Keystone's ``{"error": {"code", "message", "title"}}`` shape, which keystoneauth parses.
"""

from __future__ import annotations

import functools

from aiohttp import web

from common import exceptions
from services.api.app import CONF, Handler, public
from services.api.errors import error_body
from services.api.identity import resources, tokens
from services.api.identity.catalog import identity_version, identity_versions

__all__ = ["add_routes"]


def _keystone_errors(handler: Handler) -> Handler:
    """Render ``StratusError`` in Keystone's shape (the middleware still adds the request id headers)."""

    @functools.wraps(handler)
    async def wrapper(request: web.Request) -> web.StreamResponse:
        try:
            return await handler(request)
        except exceptions.StratusError as e:
            return web.json_response(error_body(e, "/identity"), status=e.code)

    return wrapper


@public
async def versions(request: web.Request) -> web.Response:
    return web.json_response(identity_versions(request.app[CONF].api.public_endpoint.rstrip("/")))


@public
async def version(request: web.Request) -> web.Response:
    return web.json_response({"version": identity_version(request.app[CONF].api.public_endpoint.rstrip("/"))})


def add_routes(app: web.Application) -> None:
    r = app.router
    v3 = "/identity/v3"
    for path in ("/identity", "/identity/"):
        r.add_get(path, versions)
    for path in (v3, v3 + "/"):
        r.add_get(path, version)
    routes = [
        ("POST", "/auth/tokens", tokens.issue_token),
        ("GET", "/auth/tokens", tokens.validate_token),
        ("HEAD", "/auth/tokens", tokens.check_token),
        ("DELETE", "/auth/tokens", tokens.revoke_token),
        ("GET", "/auth/projects", tokens.auth_projects),
        ("GET", "/auth/catalog", tokens.auth_catalog),
        ("GET", "/projects", resources.list_projects),
        ("POST", "/projects", resources.create_project),
        ("GET", "/projects/{project_id}", resources.get_project),
        ("GET", "/projects/{project_id}/users/{user_id}/roles", resources.list_user_project_roles),
        ("PUT", "/projects/{project_id}/users/{user_id}/roles/{role_id}", resources.grant_role),
        ("HEAD", "/projects/{project_id}/users/{user_id}/roles/{role_id}", resources.check_role),
        ("DELETE", "/projects/{project_id}/users/{user_id}/roles/{role_id}", resources.revoke_role),
        ("GET", "/users", resources.list_users),
        ("POST", "/users", resources.create_user),
        ("GET", "/users/{user_id}", resources.get_user),
        ("GET", "/users/{user_id}/projects", resources.list_user_projects),
        ("GET", "/roles", resources.list_roles),
        ("POST", "/roles", resources.create_role),
        ("GET", "/roles/{role_id}", resources.get_role),
        ("GET", "/role_assignments", resources.list_role_assignments),
        ("GET", "/domains", resources.list_domains),
        ("GET", "/domains/{domain_id}", resources.get_domain),
    ]
    for method, path, handler in routes:
        r.add_route(method, v3 + path, _keystone_errors(handler))
