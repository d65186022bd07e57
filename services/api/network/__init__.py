"""The Network API (Neutron's v2.0 path layout) under ``/network``.

``ROUTES`` is the Network part of the route table (``services.api.routes``): the version documents, networks,
subnets, ports, security groups and their rules, extensions and quotas. Errors take Neutron's ``NeutronError``
shape; list requests refuse query parameters that are not a filter of the resource, as Neutron does.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from common import exceptions
from services.api import routes
from services.api.app import CONF, ctx, public
from services.api.network import networks, ports, security_groups, subnets
from services.api.network import responses as r
from services.api.network.common import PREFIX, show_response
from services.api.routes import Route
from services.api.shapes import ID

__all__ = ["API", "EXTENSIONS", "ROUTES", "add_routes", "neutron_error"]

# Only what Stratus really implements: clients probe these aliases before using a feature.
EXTENSIONS = [
    ("project-id", "project-id field", "Extension that indicates that project_id field is enabled."),
    ("net-mtu", "Network MTU", "Provides MTU attribute for a network resource."),
    ("standard-attr-description", "standard-attr-description", "Extension to add descriptions to resources."),
    ("standard-attr-revisions", "Resource revision numbers", "This extension will display the revision number."),
    ("standard-attr-timestamp", "Resource timestamps", "Adds created_at and updated_at fields to resources."),
    ("binding", "Port Binding", "Expose port bindings of a virtual port to external application."),
    ("external-net", "Neutron external network", "Adds external network attribute to network resource."),
]
_RESOURCES = ["networks", "subnets", "ports", "security-groups", "security-group-rules", "extensions", "quotas"]
# Stratus does not limit networking resources per project yet: Neutron's "unlimited" is -1.
_QUOTA_KEYS = ["network", "subnet", "port", "security_group", "security_group_rule", "subnetpool", "rbac_policy"]
_NO_ROUTERS = ["router", "floatingip"]


def _base(request: web.Request) -> str:
    return request.app[CONF].api.public_endpoint.rstrip("/") + "/network"


def neutron_error(e: exceptions.StratusError) -> dict[str, Any]:
    """Neutron's error body: ``{"NeutronError": {"type", "message", "detail"}}``."""
    return {"NeutronError": {"type": type(e).__name__, "message": e.message, "detail": ""}}


API = routes.Api(
    name="network",
    prefix="/network",
    title="Network v2.0 (Neutron); errors {NeutronError: {type, message, detail}}",
    error_body=neutron_error,
    error_schema=r.NEUTRON_ERROR,
    unknown_query="{name} is an invalid filter: it is not an attribute of this resource.",
)


@public
async def versions(request: web.Request) -> web.Response:
    """``GET /network/``: the one API version, for keystoneauth's discovery."""
    return web.json_response(
        {
            "versions": [
                {
                    "id": "v2.0",
                    "status": "CURRENT",
                    "links": [{"rel": "self", "href": f"{_base(request)}/v2.0/"}],
                }
            ]
        }
    )


@public
async def v2_root(request: web.Request) -> web.Response:
    """``GET /network/v2.0``: the resource collections, as Neutron lists them."""
    base = f"{_base(request)}/v2.0"
    return web.json_response(
        {
            "resources": [
                {
                    "name": name.rstrip("s").replace("-", "_"),
                    "collection": name.replace("-", "_"),
                    "links": [{"rel": "self", "href": f"{base}/{name}"}],
                }
                for name in _RESOURCES
            ]
        }
    )


def _extension(alias: str, name: str, description: str) -> dict[str, Any]:
    return {"alias": alias, "name": name, "description": description, "updated": "2024-01-01T00:00:00-00:00",
            "links": []}  # fmt: skip


async def list_extensions(request: web.Request) -> web.Response:
    return web.json_response({"extensions": [_extension(*e) for e in EXTENSIONS]})


async def show_extension(request: web.Request) -> web.Response:
    alias = request.match_info["alias"]
    for ext in EXTENSIONS:
        if ext[0] == alias:
            return show_response(request, "extension", _extension(*ext))
    raise exceptions.NotFound(f"Extension with alias {alias} does not exist")


def _quota() -> dict[str, int]:
    return {**dict.fromkeys(_QUOTA_KEYS, -1), **dict.fromkeys(_NO_ROUTERS, 0)}


def _own_quota(request: web.Request) -> None:
    """A project's quotas are its own members' (and admins') to read, as in Neutron."""
    c = ctx(request)
    if request.match_info["project_id"] != c.project and not c.is_admin:
        raise exceptions.Forbidden("Policy doesn't allow showing another project's quotas: it needs the admin role.")


async def show_quota(request: web.Request) -> web.Response:
    _own_quota(request)
    return web.json_response({"quota": _quota()})


async def show_quota_details(request: web.Request) -> web.Response:
    _own_quota(request)
    return web.json_response({"quota": {k: {"limit": v, "used": 0, "reserved": 0} for k, v in _quota().items()}})


def _resource(
    collection: str,
    member: str,
    key: str,
    module_filters: Any,
    handlers: tuple,
    body: dict,
    item: dict[str, Any],
    extra: dict[str, routes.Param] | None = None,
    update: bool = True,
) -> list[Route]:
    """Neutron's five routes of one collection (no PUT unless ``update``)."""
    list_, create, show, put, delete = handlers
    base = f"{PREFIX}/{collection}"
    path = {key: ID}
    title = member.replace("_", " ")
    out = [
        Route(
            "GET",
            base,
            list_,
            f"List {title}s",
            {200: r.collection(collection.replace("-", "_"), item)},
            query=r.list_query(module_filters, extra),
            strict_query=True,
        ),
        Route("POST", base, create, f"Create a {title}", {201: r.member(member, item)}, body=body),
        Route(
            "GET", f"{base}/{{{key}}}", show, f"Show a {title}", {200: r.member(member, item)}, path, query=r.SHOW_QUERY
        ),
    ]
    if update:
        out.append(
            Route("PUT", f"{base}/{{{key}}}", put, f"Update a {title}", {200: r.member(member, item)}, path, body=body)
        )
    out.append(Route("DELETE", f"{base}/{{{key}}}", delete, f"Delete a {title}", {204: None}, path))
    return out  # fmt: skip


_N, _S, _P, _SG = networks, subnets, ports, security_groups
ROUTES: list[Route] = [
    Route("GET", "/network", versions, "Network API versions", {200: r.VERSIONS}),
    Route("GET", "/network/", versions, "Network API versions", {200: r.VERSIONS}),
    Route("GET", PREFIX, v2_root, "The v2.0 resource collections", {200: r.RESOURCES}),
    Route("GET", f"{PREFIX}/", v2_root, "The v2.0 resource collections", {200: r.RESOURCES}),
    *_resource("networks", "network", "network_id", _N.FILTERS,
               (_N.list_networks, _N.create_network, _N.show_network, _N.update_network, _N.delete_network),
               r.member_body("network", _N.PROPERTIES), r.NETWORK),
    *_resource("subnets", "subnet", "subnet_id", _S.FILTERS,
               (_S.list_subnets, _S.create_subnet, _S.show_subnet, _S.update_subnet, _S.delete_subnet),
               r.member_body("subnet", _S.PROPERTIES), r.SUBNET, r.repeated(_S.NULL_FILTERS)),
    *_resource("ports", "port", "port_id", _P.FILTERS,
               (_P.list_ports, _P.create_port, _P.show_port, _P.update_port, _P.delete_port),
               r.member_body("port", _P.PROPERTIES), r.PORT, r.repeated(("fixed_ips", "security_groups"))),
    *_resource("security-groups", "security_group", "group_id", _SG.GROUP_FILTERS,
               (_SG.list_groups, _SG.create_group, _SG.show_group, _SG.update_group, _SG.delete_group),
               r.member_body("security_group", _SG.GROUP_PROPERTIES), r.SECURITY_GROUP),
    *_resource("security-group-rules", "security_group_rule", "rule_id", _SG.RULE_FILTERS,
               (_SG.list_rules, _SG.create_rule, _SG.show_rule, None, _SG.delete_rule),
               r.member_body("security_group_rule", _SG.RULE_PROPERTIES), r.RULE, update=False),
    Route("GET", f"{PREFIX}/extensions", list_extensions, "List extensions",
          {200: r.collection("extensions", r.EXTENSION)}, query=r.SHOW_QUERY),
    Route("GET", f"{PREFIX}/extensions/{{alias}}", show_extension, "Show an extension",
          {200: r.member("extension", r.EXTENSION)}, {"alias": ID}, query=r.SHOW_QUERY),
    Route("GET", f"{PREFIX}/quotas/{{project_id}}", show_quota, "A project's quotas (none are enforced)",
          {200: r.QUOTA}, {"project_id": ID}),
    Route("GET", f"{PREFIX}/quotas/{{project_id}}/details.json", show_quota_details,
          "A project's quotas with usage", {200: r.QUOTA_DETAILS}, {"project_id": ID}),
]  # fmt: skip


def add_routes(app: web.Application) -> None:
    """Register every ``/network`` route on the API application."""
    routes.register(app, API, ROUTES)
