"""The Network API (Neutron's v2.0 path layout) under ``/network``.

``add_routes(app)`` registers the version documents, networks, subnets, ports, the read-only default security
groups, extensions and quotas. Handlers answer client errors in Neutron's ``NeutronError`` shape; the
application's middleware does authentication, request ids and server errors.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from common import exceptions
from services.api.app import CONF, ctx, public
from services.api.network import networks, ports, security_groups, subnets
from services.api.network.common import PREFIX, neutron_errors, show_response

__all__ = ["EXTENSIONS", "add_routes"]

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


def add_routes(app: web.Application) -> None:
    """Register every ``/network`` route on the API application."""
    w = neutron_errors
    app.router.add_get("/network", versions)
    app.router.add_get("/network/", versions)
    app.router.add_get(PREFIX, v2_root)
    app.router.add_get(f"{PREFIX}/", v2_root)
    sg = security_groups
    _resource(app, w, "networks", "network_id", networks.list_networks, networks.create_network, networks.show_network,
              networks.update_network, networks.delete_network)  # fmt: skip
    _resource(app, w, "subnets", "subnet_id", subnets.list_subnets, subnets.create_subnet, subnets.show_subnet,
              subnets.update_subnet, subnets.delete_subnet)  # fmt: skip
    _resource(app, w, "ports", "port_id", ports.list_ports, ports.create_port, ports.show_port, ports.update_port,
              ports.delete_port)  # fmt: skip
    _resource(app, w, "security-groups", "group_id", sg.list_groups, sg.create_group, sg.show_group, sg.update_group,
              sg.delete_group)  # fmt: skip
    _resource(
        app, w, "security-group-rules", "rule_id", sg.list_rules, sg.create_rule, sg.show_rule, None, sg.delete_rule
    )

    app.router.add_get(f"{PREFIX}/extensions", w(list_extensions))
    app.router.add_get(f"{PREFIX}/extensions/{{alias}}", w(show_extension))
    app.router.add_get(f"{PREFIX}/quotas/{{project_id}}", w(show_quota))
    app.router.add_get(f"{PREFIX}/quotas/{{project_id}}/details.json", w(show_quota_details))


def _resource(app: web.Application, wrap: Any, collection: str, key: str, list_: Any, create: Any, show: Any,
              update: Any, delete: Any) -> None:  # fmt: skip
    """Neutron's five routes of one collection (no PUT where ``update`` is None)."""
    base = f"{PREFIX}/{collection}"
    app.router.add_get(base, wrap(list_))
    app.router.add_post(base, wrap(create))
    item = f"{base}/{{{key}}}"
    app.router.add_get(item, wrap(show))
    if update is not None:
        app.router.add_put(item, wrap(update))
    app.router.add_delete(item, wrap(delete))
