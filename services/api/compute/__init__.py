"""Compute v2.1 (Nova-compatible subset) under ``/compute/v2.1``, also with the legacy ``/{project_id}`` prefix.

``ROUTES`` is the Compute part of the route table (``services.api.routes``): every route but the version
documents goes through microversion negotiation (``microversion.negotiated``, the API's wrapper), and is also
served under ``/compute/v2.1/{url_project_id}`` (the match info keeps ``url_project_id`` for the handlers and
wrappers that check it).
"""

from __future__ import annotations

from dataclasses import replace

from aiohttp import web

from services.api import routes
from services.api.app import CONF, public
from services.api.compute import aggregates, flavors, infra, keypairs, schemas, server_actions, server_groups, servers
from services.api.compute import responses as r
from services.api.compute.microversion import negotiated, version_doc
from services.api.compute.wire import instance_to_wire
from services.api.routes import Param, Route
from services.api.shapes import ID, LIMIT, MARKER, STR, TEXT, int4, obj, text

__all__ = ["API", "ROUTES", "add_routes", "instance_to_wire"]

V21 = "/compute/v2.1"
# Keystone-style project ids (32 hex digits) or uuids: never a collection name such as "servers".
_PROJECT_ID = "[0-9a-fA-F]{32}|[0-9a-fA-F-]{36}"

NOVA_ERROR = {
    "type": "object",
    "minProperties": 1,
    "maxProperties": 1,
    "additionalProperties": obj({"code": {"type": "integer"}, "message": STR}, required=("code", "message")),
}

_VERSION_HEADER = Param(text(255), "The microversion wanted: 'compute 2.1' or 'compute latest'")
API = routes.Api(
    name="compute",
    prefix="/compute",
    title="Compute v2.1 (Nova); errors {title: {code, message}}",
    error_body=routes.error_body,
    error_schema=NOVA_ERROR,
    wrap=negotiated,
    headers={"OpenStack-API-Version": _VERSION_HEADER, "X-OpenStack-Nova-API-Version": _VERSION_HEADER},
    errors=(400, 401, 403, 404, 406, 409, 503),
)
# The version documents are not negotiated.
VERSION_API = replace(API, wrap=None, headers={})


@public
async def versions(request: web.Request) -> web.Response:
    """The Compute API versions (keystoneauth's discovery)."""
    base = request.app[CONF].api.public_endpoint.rstrip("/")
    return web.json_response({"versions": [version_doc(base)]})


@public
async def version(request: web.Request) -> web.Response:
    """The v2.1 version document."""
    base = request.app[CONF].api.public_endpoint.rstrip("/")
    return web.json_response({"version": version_doc(base)})


S = {"server_id": ID}
F = {"flavor_id": ID}
_SERVER_QUERY = {
    "limit": LIMIT,
    "marker": MARKER,
    "name": Param(TEXT, "A regular expression the name must match"),
    "status": Param(text(32), "Servers in this status (repeatable)", repeat=True),
    "all_tenants": Param(text(16), "Admins: every project's servers"),
    "project_id": Param(ID, "Admins: this project's servers"),
    "tenant_id": Param(ID, "Admins: this project's servers"),
    "host": Param(TEXT, "Admins: servers on this compute host"),
}
_FLAVOR_QUERY = {
    "limit": LIMIT,
    "marker": MARKER,
    "is_public": Param(text(8), "Admins: true, false, or none/all for both"),
    "minRam": Param(int4(), "Flavors with at least this much RAM (MiB)"),
    "minDisk": Param(int4(), "Flavors with at least this much disk (GiB)"),
}

ROUTES: list[Route] = [
    Route("GET", "/servers", servers.list_servers, "List servers", {200: r.SERVERS}, query=_SERVER_QUERY),
    Route("GET", "/servers/detail", servers.list_servers, "List servers in detail", {200: r.SERVERS_DETAIL},
          query=_SERVER_QUERY),
    Route("POST", "/servers", servers.create_server, "Boot servers", {202: r.SERVER_CREATED},
          body=schemas.SERVER_CREATE),
    Route("GET", "/servers/{server_id}", servers.show_server, "Show a server", {200: r.SERVER_ONE}, S),
    Route("PUT", "/servers/{server_id}", servers.update_server, "Rename a server", {200: r.SERVER_ONE}, S,
          body=schemas.SERVER_UPDATE),
    Route("DELETE", "/servers/{server_id}", servers.delete_server, "Delete a server", {204: None}, S),
    Route("POST", "/servers/{server_id}/action", server_actions.server_action,
          "Stop, start, reboot a server or read its console", {200: r.CONSOLE_OUTPUT, 202: None}, S,
          body=schemas.ACTION_BODY),
    Route("GET", "/servers/{server_id}/os-instance-actions", server_actions.list_instance_actions,
          "List a server's actions", {200: r.INSTANCE_ACTIONS}, S),
    Route("GET", "/servers/{server_id}/os-instance-actions/{request_id}", server_actions.get_instance_action,
          "Show a server action and its events", {200: r.INSTANCE_ACTION}, {**S, "request_id": ID}),
    Route("GET", "/flavors", flavors.list_flavors, "List flavors", {200: r.FLAVORS}, query=_FLAVOR_QUERY),
    Route("GET", "/flavors/detail", flavors.list_flavors, "List flavors in detail", {200: r.FLAVORS},
          query=_FLAVOR_QUERY),
    Route("POST", "/flavors", flavors.create_flavor, "Create a flavor", {200: r.FLAVOR_ONE},
          body=schemas.FLAVOR_CREATE, admin_only=True),
    Route("GET", "/flavors/{flavor_id}", flavors.show_flavor, "Show a flavor", {200: r.FLAVOR_ONE}, F),
    Route("DELETE", "/flavors/{flavor_id}", flavors.delete_flavor, "Delete a flavor", {202: None}, F,
          admin_only=True),
    Route("GET", "/flavors/{flavor_id}/os-extra_specs", flavors.list_extra_specs, "List a flavor's extra specs",
          {200: r.EXTRA_SPECS}, F),
    Route("POST", "/flavors/{flavor_id}/os-extra_specs", flavors.create_extra_specs, "Set extra specs",
          {200: r.EXTRA_SPECS}, F, body=schemas.FLAVOR_EXTRA_SPECS, admin_only=True),
    Route("GET", "/flavors/{flavor_id}/os-extra_specs/{key}", flavors.get_extra_spec, "Show one extra spec",
          {200: r.EXTRA_SPEC}, {**F, "key": ID}),
    Route("DELETE", "/flavors/{flavor_id}/os-extra_specs/{key}", flavors.delete_extra_spec, "Unset an extra spec",
          {200: None}, {**F, "key": ID}, admin_only=True),
    Route("GET", "/os-keypairs", keypairs.list_keypairs, "List the caller's key pairs", {200: r.KEYPAIRS},
          query={"limit": LIMIT, "marker": MARKER}),
    Route("POST", "/os-keypairs", keypairs.create_keypair, "Import a key pair", {200: r.KEYPAIR_CREATED},
          body=schemas.KEYPAIR_CREATE),
    Route("GET", "/os-keypairs/{name}", keypairs.show_keypair, "Show a key pair", {200: r.KEYPAIR}, {"name": ID}),
    Route("DELETE", "/os-keypairs/{name}", keypairs.delete_keypair, "Delete a key pair", {202: None},
          {"name": ID}),
    Route("GET", "/limits", infra.limits, "The project's quotas and usage", {200: r.LIMITS},
          query={"tenant_id": Param(ID, "Admins: another project's")}),
    Route("GET", "/os-quota-sets/{project_id}", infra.quota_set, "A project's quotas", {200: r.QUOTA_SET},
          {"project_id": ID}),
    Route("GET", "/os-quota-sets/{project_id}/detail", infra.quota_set, "A project's quotas and usage",
          {200: r.QUOTA_SET_DETAIL}, {"project_id": ID}),
    Route("GET", "/os-quota-sets/{project_id}/defaults", infra.quota_defaults, "The default quotas",
          {200: r.QUOTA_SET}, {"project_id": ID}),
    Route("GET", "/os-availability-zone", infra.availability_zones, "List availability zones",
          {200: r.AVAILABILITY_ZONES}),
    Route("GET", "/os-availability-zone/detail", infra.availability_zones_detail,
          "List availability zones with their hosts", {200: r.AVAILABILITY_ZONES}, admin_only=True),
    Route("GET", "/os-hypervisors", infra.list_hypervisors, "List hypervisors", {200: r.HYPERVISORS},
          query={"hypervisor_hostname_pattern": Param(TEXT)}, admin_only=True),
    Route("GET", "/os-hypervisors/detail", infra.list_hypervisors, "List hypervisors in detail",
          {200: r.HYPERVISORS}, query={"hypervisor_hostname_pattern": Param(TEXT)}, admin_only=True),
    Route("GET", "/os-hypervisors/{hypervisor_id}", infra.show_hypervisor, "Show a hypervisor",
          {200: r.HYPERVISOR_ONE}, {"hypervisor_id": ID}, admin_only=True),
    Route("GET", "/os-hypervisors/{hypervisor_id}/uptime", infra.hypervisor_uptime, "A hypervisor's uptime",
          {}, {"hypervisor_id": ID}, admin_only=True, errors=(501,)),
    Route("GET", "/os-services", infra.list_services, "List services", {200: r.SERVICES},
          query={"binary": Param(TEXT), "host": Param(TEXT)}, admin_only=True),
    Route("GET", "/os-aggregates", aggregates.list_aggregates, "List host aggregates", {200: r.AGGREGATES},
          admin_only=True),
    Route("POST", "/os-aggregates", aggregates.create_aggregate, "Create a host aggregate",
          {200: r.AGGREGATE_ONE}, body=aggregates.CREATE, admin_only=True),
    Route("GET", "/os-aggregates/{aggregate_id}", aggregates.show_aggregate, "Show a host aggregate",
          {200: r.AGGREGATE_ONE}, {"aggregate_id": ID}, admin_only=True),
    Route("PUT", "/os-aggregates/{aggregate_id}", aggregates.update_aggregate, "Update a host aggregate",
          {200: r.AGGREGATE_ONE}, {"aggregate_id": ID}, body=aggregates.UPDATE, admin_only=True),
    Route("DELETE", "/os-aggregates/{aggregate_id}", aggregates.delete_aggregate, "Delete a host aggregate",
          {200: None}, {"aggregate_id": ID}, admin_only=True),
    Route("POST", "/os-aggregates/{aggregate_id}/action", aggregates.aggregate_action,
          "Add or remove a host, set metadata", {200: r.AGGREGATE_ONE}, {"aggregate_id": ID},
          body=aggregates.ACTION, admin_only=True),
    Route("GET", "/os-server-groups", server_groups.list_server_groups, "List server groups",
          {200: r.SERVER_GROUPS}, query={"all_projects": Param(text(16), "Admins: every project's")}),
    Route("POST", "/os-server-groups", server_groups.create_server_group, "Create a server group",
          {200: r.SERVER_GROUP_ONE}, body=server_groups.SERVER_GROUP_CREATE),
    Route("GET", "/os-server-groups/{group_id}", server_groups.show_server_group, "Show a server group",
          {200: r.SERVER_GROUP_ONE}, {"group_id": ID}),
    Route("DELETE", "/os-server-groups/{group_id}", server_groups.delete_server_group, "Delete a server group",
          {204: None}, {"group_id": ID}),
]  # fmt: skip

_URL_PROJECT = {"url_project_id": {"type": "string", "minLength": 32, "maxLength": 36}}


def add_routes(app: web.Application) -> None:
    """Register the version documents and ``ROUTES`` under both prefixes."""
    docs = [
        Route("GET", path, handler, summary, {200: shape})
        for path, handler, summary, shape in (
            ("/compute", versions, "Compute API versions", r.VERSIONS),
            ("/compute/", versions, "Compute API versions", r.VERSIONS),
            (V21, version, "The v2.1 version document", r.VERSION_DOC),
            (V21 + "/", version, "The v2.1 version document", r.VERSION_DOC),
        )
    ]
    routes.register(app, VERSION_API, docs)
    table = [replace(route, path=V21 + route.path) for route in ROUTES]
    table += [
        replace(
            route,
            path=f"{V21}/{{url_project_id}}{route.path}",
            path_params={**_URL_PROJECT, **route.path_params},
            patterns={"url_project_id": _PROJECT_ID},
        )
        for route in ROUTES
    ]
    routes.register(app, API, table)
