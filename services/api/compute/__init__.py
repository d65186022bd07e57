"""Compute v2.1 (Nova-compatible subset) under ``/compute/v2.1``, also with the legacy ``/{project_id}`` prefix.

Every route but the version documents goes through microversion negotiation (``microversion.negotiated``).
"""

from __future__ import annotations

from aiohttp import web

from services.api.app import CONF, public
from services.api.compute import aggregates, flavors, infra, keypairs, server_actions, server_groups, servers
from services.api.compute.microversion import negotiated, version_doc
from services.api.compute.wire import instance_to_wire

__all__ = ["add_routes", "instance_to_wire"]

# Keystone-style project ids (32 hex digits) or uuids: never a collection name such as "servers".
_PROJECT_PREFIX = "/{url_project_id:[0-9a-fA-F]{32}|[0-9a-fA-F-]{36}}"


@public
async def versions(request: web.Request) -> web.Response:
    base = request.app[CONF].api.public_endpoint.rstrip("/")
    return web.json_response({"versions": [version_doc(base)]})


@public
async def version(request: web.Request) -> web.Response:
    base = request.app[CONF].api.public_endpoint.rstrip("/")
    return web.json_response({"version": version_doc(base)})


ROUTES = [
    ("GET", "/servers", servers.list_servers),
    ("GET", "/servers/detail", servers.list_servers),
    ("POST", "/servers", servers.create_server),
    ("GET", "/servers/{server_id}", servers.show_server),
    ("PUT", "/servers/{server_id}", servers.update_server),
    ("DELETE", "/servers/{server_id}", servers.delete_server),
    ("POST", "/servers/{server_id}/action", server_actions.server_action),
    ("GET", "/servers/{server_id}/os-instance-actions", server_actions.list_instance_actions),
    ("GET", "/servers/{server_id}/os-instance-actions/{request_id}", server_actions.get_instance_action),
    ("GET", "/flavors", flavors.list_flavors),
    ("GET", "/flavors/detail", flavors.list_flavors),
    ("POST", "/flavors", flavors.create_flavor),
    ("GET", "/flavors/{flavor_id}", flavors.show_flavor),
    ("DELETE", "/flavors/{flavor_id}", flavors.delete_flavor),
    ("GET", "/flavors/{flavor_id}/os-extra_specs", flavors.list_extra_specs),
    ("POST", "/flavors/{flavor_id}/os-extra_specs", flavors.create_extra_specs),
    ("GET", "/flavors/{flavor_id}/os-extra_specs/{key}", flavors.get_extra_spec),
    ("DELETE", "/flavors/{flavor_id}/os-extra_specs/{key}", flavors.delete_extra_spec),
    ("GET", "/os-keypairs", keypairs.list_keypairs),
    ("POST", "/os-keypairs", keypairs.create_keypair),
    ("GET", "/os-keypairs/{name}", keypairs.show_keypair),
    ("DELETE", "/os-keypairs/{name}", keypairs.delete_keypair),
    ("GET", "/limits", infra.limits),
    ("GET", "/os-quota-sets/{project_id}", infra.quota_set),
    ("GET", "/os-quota-sets/{project_id}/detail", infra.quota_set),
    ("GET", "/os-quota-sets/{project_id}/defaults", infra.quota_defaults),
    ("GET", "/os-availability-zone", infra.availability_zones),
    ("GET", "/os-availability-zone/detail", infra.availability_zones_detail),
    ("GET", "/os-hypervisors", infra.list_hypervisors),
    ("GET", "/os-hypervisors/detail", infra.list_hypervisors),
    ("GET", "/os-hypervisors/{hypervisor_id}", infra.show_hypervisor),
    ("GET", "/os-hypervisors/{hypervisor_id}/uptime", infra.hypervisor_uptime),
    ("GET", "/os-services", infra.list_services),
    ("GET", "/os-aggregates", aggregates.list_aggregates),
    ("POST", "/os-aggregates", aggregates.create_aggregate),
    ("GET", "/os-aggregates/{aggregate_id}", aggregates.show_aggregate),
    ("PUT", "/os-aggregates/{aggregate_id}", aggregates.update_aggregate),
    ("DELETE", "/os-aggregates/{aggregate_id}", aggregates.delete_aggregate),
    ("POST", "/os-aggregates/{aggregate_id}/action", aggregates.aggregate_action),
    ("GET", "/os-server-groups", server_groups.list_server_groups),
    ("POST", "/os-server-groups", server_groups.create_server_group),
    ("GET", "/os-server-groups/{group_id}", server_groups.show_server_group),
    ("DELETE", "/os-server-groups/{group_id}", server_groups.delete_server_group),
]


def add_routes(app: web.Application) -> None:
    r = app.router
    for path in ("/compute", "/compute/"):
        r.add_get(path, versions)
    for path in ("/compute/v2.1", "/compute/v2.1/"):
        r.add_get(path, version)
    for prefix in ("/compute/v2.1", "/compute/v2.1" + _PROJECT_PREFIX):
        for method, path, handler in ROUTES:
            r.add_route(method, prefix + path, negotiated(handler))
