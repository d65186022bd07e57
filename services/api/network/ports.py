"""``/network/v2.0/ports``: list, show, create (with fixed-IP requests), update, delete."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import asyncpg
from aiohttp import web

from common import exceptions, netvalues
from common.context import RequestContext
from common.db import instances as instances_db
from common.db import networks as db
from common.db import security_groups as db_sg
from services.api.app import CONF, DB, ctx
from services.api.network.common import (
    body_of,
    check_attributes,
    default_sg_id,
    delete_handler,
    list_response,
    owner_or_admin,
    parse_bool,
    parse_list_query,
    requested_project,
    scope,
    show_response,
    text,
    timestamp,
    validate_member,
)
from services.api.network.networks import visible_network
from services.network import ipam

__all__ = ["port_view"]


def _mac(name: str, value: str) -> str:
    return ipam.parse_mac(value)


FILTERS = {
    "id": ("id", text),
    "name": ("name", text),
    "description": ("description", text),
    "project_id": ("project_id", text),
    "tenant_id": ("project_id", text),
    "network_id": ("network_id", text),
    "mac_address": ("mac_address", _mac),
    "admin_state_up": ("admin_state_up", parse_bool),
    "status": ("status", text),
    "device_id": ("device_id", text),
    "device_owner": ("device_owner", text),
    "binding:host_id": ("binding_host", text),
}
_COMPUTE_OWNER = "compute:"
_FIXED_IP_KEYS = {"ip_address", "subnet_id", "ip_address_substr"}

_NAME = {"type": "string", "maxLength": 255}
_FIXED_IPS = {
    "type": "array",
    "items": {
        "type": "object",
        "properties": {
            "subnet_id": {"type": "string", "maxLength": 255},
            "ip_address": {"type": "string", "maxLength": 64},
        },
        "additionalProperties": False,
    },
}
PROPERTIES: dict[str, Any] = {
    "name": _NAME,
    "description": _NAME,
    "network_id": {"type": "string", "minLength": 1, "maxLength": 255},
    "project_id": {"type": "string", "minLength": 1, "maxLength": 255},
    "tenant_id": {"type": "string", "minLength": 1, "maxLength": 255},
    "admin_state_up": {"type": "boolean"},
    "mac_address": {"type": "string", "maxLength": 64},
    "fixed_ips": _FIXED_IPS,
    "device_id": _NAME,
    "device_owner": _NAME,
    "dns_name": {"type": "string", "maxLength": 63},  # and a DNS label: _checked_dns_name()
    "binding:host_id": {"type": "string", "maxLength": 255},
    "security_groups": {"type": "array", "items": {"type": "string", "maxLength": 255}},
    # Accepted at their only supported value, so clients that always send them keep working.
    "binding:vnic_type": {"const": "normal"},
    "binding:profile": {"type": "object", "maxProperties": 0},
    "port_security_enabled": {"const": True},
    "allowed_address_pairs": {"type": "array", "maxItems": 0},
    "extra_dhcp_opts": {"type": "array", "maxItems": 0},
    "qos_policy_id": {"type": "null"},
}
CREATE_ATTRS = set(PROPERTIES)
UPDATE_ATTRS = CREATE_ATTRS - {"network_id", "project_id", "tenant_id"}
READ_ONLY = {"id", "network_id", "project_id", "tenant_id", "status", "created_at", "updated_at", "revision_number"}


def _checked_dns_name(body: Mapping[str, Any]) -> dict[str, Any]:
    """``body`` with its ``dns_name`` (if any) checked: "" or one DNS label of ASCII letters, digits and hyphens
    (``common.netvalues.dns_label``), as it reaches dnsmasq's files; ``BadRequest`` (400) naming it otherwise."""
    if "dns_name" not in body:
        return dict(body)
    return {**body, "dns_name": netvalues.dns_label(body["dns_name"], "dns_name")}


def port_view(
    row: Mapping[str, Any],
    fixed_ips: Sequence[Mapping[str, str]],
    *,
    admin: bool,
    security_groups: Sequence[str] | None = None,
) -> dict[str, Any]:
    """A ``ports`` row as Neutron shows a port; ``binding:*`` attributes only to admins, as Neutron does.

    ``security_groups``: the port's groups (default: its project's 'default' group)."""
    view = {
        "id": row["id"],
        "name": row["name"],
        "description": row["description"],
        "network_id": row["network_id"],
        "tenant_id": row["project_id"],
        "project_id": row["project_id"],
        "mac_address": str(row["mac_address"]),
        "admin_state_up": row["admin_state_up"],
        "status": row["status"],
        "device_id": row["device_id"],
        "device_owner": row["device_owner"],
        "fixed_ips": [dict(f) for f in fixed_ips],
        "dns_name": row["dns_name"],
        "security_groups": list(security_groups or [default_sg_id(row["project_id"])]),
        "port_security_enabled": True,
        "allowed_address_pairs": [],
        "extra_dhcp_opts": [],
        "ip_allocation": "immediate",
        "qos_policy_id": None,
        "tags": [],
        "created_at": timestamp(row["created_at"]),
        "updated_at": timestamp(row["updated_at"]),
        "revision_number": row["revision_number"],
    }
    if admin:
        bound = row["binding_host"] is not None
        view.update(
            {
                "binding:host_id": row["binding_host"] or "",
                "binding:vif_type": "bridge" if bound else "unbound",
                "binding:vif_details": {"port_filter": True} if bound else {},
                "binding:vnic_type": "normal",
                "binding:profile": {},
            }
        )
    return view


async def _set_security_groups(conn: asyncpg.Connection, body: Mapping[str, Any], row: Mapping[str, Any]) -> None:
    """Put the port in the groups the request names (ids, or 'default'); ``NotFound`` for an unknown one."""
    if body.get("security_groups") is not None:
        await db_sg.set_port_groups(conn, row, body["security_groups"])


def _check_privileged(c: RequestContext, body: Mapping[str, Any]) -> None:
    if "binding:host_id" in body and not c.is_admin:
        raise exceptions.Forbidden("Policy doesn't allow setting binding:host_id: it needs the admin role.")
    if str(body.get("device_owner", "")).startswith(db.NETWORK_OWNED_PREFIX) and not c.is_admin:
        raise exceptions.Forbidden(
            f"Policy doesn't allow device_owner {body['device_owner']!r}: it is reserved for the network service."
        )
    if str(body.get("device_owner", "")).startswith(_COMPUTE_OWNER) and not c.is_admin:
        raise exceptions.Forbidden(
            f"Policy doesn't allow device_owner {body['device_owner']!r}: only the cloud binds a port to a server "
            "(boot the server with the port instead)."
        )


async def _check_device(
    conn: asyncpg.Connection,
    c: RequestContext,
    body: Mapping[str, Any],
    project_id: str,
    port: Mapping[str, Any] | None,
) -> None:
    """Only the cloud binds a port to a server. A member may not name a server as a port's ``device_id`` (nor
    take a port off the server the cloud bound it to); an admin may, for a server of the port's own project.
    ``port``: the port being updated (None on create)."""
    if port is not None and not c.is_admin and port["device_owner"].startswith(_COMPUTE_OWNER):
        for key in ("device_id", "device_owner"):
            if key in body and body[key] != port[key]:
                raise exceptions.Conflict(
                    f"Port {port['id']} is attached to server {port['device_id']}: only the cloud changes its "
                    f"{key} (delete the server, or the port)."
                )
    device = body.get("device_id")
    if not device or (port is not None and device == port["device_id"]):
        return
    server = await instances_db.get(conn, device, with_deleted=True)
    if server is None:
        return  # a free-form device id (Neutron allows them); no lookup by device ever takes it for a server
    if not c.is_admin:
        raise exceptions.Forbidden(
            f"Policy doesn't allow device_id {device}: it names a server, and only the cloud binds a port to a "
            "server (boot the server with the port instead)."
        )
    if server["project_id"] != project_id:
        raise exceptions.BadRequest(
            f"Invalid input for device_id: server {device} belongs to another project than the port ({project_id})."
        )


async def _visible_port(
    conn: asyncpg.Connection, c: RequestContext, port_id: str, *, for_update: bool = False
) -> asyncpg.Record:
    row = await db.get_port(conn, port_id, for_update=for_update)
    if row is None or not (c.is_admin or row["project_id"] == c.project_id):
        raise exceptions.NotFound(f"Port {port_id} could not be found.")
    return row


async def _view(conn: asyncpg.Connection, c: RequestContext, row: Mapping[str, Any]) -> dict[str, Any]:
    ips = await db.fixed_ips_for(conn, [row["id"]])
    groups = await db_sg.groups_of_ports(conn, [row])
    return port_view(row, ips[row["id"]], admin=c.is_admin, security_groups=groups[row["id"]])


def _fixed_ip_filters(values: Sequence[str]) -> list[dict[str, str]]:
    """``fixed_ips=ip_address=10.0.0.3`` (repeatable; ``subnet_id=``, ``ip_address_substr=`` too)."""
    out = []
    for raw in values:
        key, sep, value = raw.partition("=")
        if not sep or key not in _FIXED_IP_KEYS:
            raise exceptions.BadRequest(
                f"Invalid fixed_ips filter {raw!r}: use ip_address=, subnet_id= or ip_address_substr=."
            )
        out.append({key: value})
    return out


async def list_ports(request: web.Request) -> web.Response:
    c = ctx(request)
    lq = parse_list_query(request, FILTERS, extra=("fixed_ips", "security_groups"))
    fixed = _fixed_ip_filters(lq.extra.get("fixed_ips", []))
    if lq.empty:
        return list_response(request, "ports", [], lq)

    async def txn(conn: asyncpg.Connection) -> list[dict[str, Any]]:
        rows = await db.list_ports(
            conn, project_id=scope(c), filters=lq.filters, fixed_ips=fixed, limit=lq.limit, marker=lq.marker
        )
        ips = await db.fixed_ips_for(conn, [r["id"] for r in rows])
        groups = await db_sg.groups_of_ports(conn, rows)
        views = [port_view(r, ips[r["id"]], admin=c.is_admin, security_groups=groups[r["id"]]) for r in rows]
        wanted_sgs = lq.extra.get("security_groups")
        if wanted_sgs:
            views = [v for v in views if set(v["security_groups"]) & set(wanted_sgs)]
        return views

    return list_response(request, "ports", await request.app[DB].run(txn), lq)


async def show_port(request: web.Request) -> web.Response:
    c = ctx(request)

    async def txn(conn: asyncpg.Connection) -> dict[str, Any]:
        return await _view(conn, c, await _visible_port(conn, c, request.match_info["port_id"]))

    return show_response(request, "port", await request.app[DB].run(txn))


async def create_port(request: web.Request) -> web.Response:
    c = ctx(request)
    body = await body_of(request, "port")
    check_attributes(body, CREATE_ATTRS)
    validate_member("port", body, PROPERTIES)
    body = _checked_dns_name(body)
    if "network_id" not in body:
        raise exceptions.BadRequest("Invalid input for operation: 'network_id' is required.")
    _check_privileged(c, body)
    project_id = requested_project(c, body)
    base_mac = request.app[CONF].network.base_mac

    async def txn(conn: asyncpg.Connection) -> dict[str, Any]:
        network = await visible_network(conn, c, body["network_id"])
        await _check_device(conn, c, body, project_id, None)
        row, _, _ = await db.create_port(
            conn,
            network_id=network["id"],
            project_id=project_id,
            base_mac=base_mac,
            fixed_ips=body.get("fixed_ips"),
            mac_address=body.get("mac_address"),
            name=body.get("name", ""),
            description=body.get("description", ""),
            admin_state_up=body.get("admin_state_up", True),
            device_id=body.get("device_id", ""),
            device_owner=body.get("device_owner", ""),
            binding_host=body.get("binding:host_id") or None,
            dns_name=body.get("dns_name", ""),
        )
        await _set_security_groups(conn, body, row)
        return await _view(conn, c, row)

    return show_response(request, "port", await request.app[DB].run(txn), status=201)


async def update_port(request: web.Request) -> web.Response:
    c = ctx(request)
    body = await body_of(request, "port")
    check_attributes(body, UPDATE_ATTRS, READ_ONLY)
    validate_member("port", body, PROPERTIES)
    body = _checked_dns_name(body)
    _check_privileged(c, body)
    columns = {"binding:host_id": "binding_host"}
    values = {
        columns.get(k, k): v
        for k, v in body.items()
        if k in ("name", "description", "admin_state_up", "device_id", "device_owner", "dns_name", "binding:host_id")
    }
    if "binding_host" in values:
        values["binding_host"] = values["binding_host"] or None

    async def txn(conn: asyncpg.Connection) -> dict[str, Any]:
        row = await _visible_port(conn, c, request.match_info["port_id"], for_update=True)
        owner_or_admin(c, row, f"port {row['id']}")
        await _check_device(conn, c, body, row["project_id"], row)
        if "mac_address" in body and ipam.parse_mac(body["mac_address"]) != str(row["mac_address"]):
            raise exceptions.BadRequest(f"The mac_address of port {row['id']} cannot be changed.")
        updated = await db.update_port(conn, row["id"], values, fixed_ips=body.get("fixed_ips"))
        await _set_security_groups(conn, body, row)
        return await _view(conn, c, updated)

    return show_response(request, "port", await request.app[DB].run(txn))


delete_port = delete_handler("port_id", "port", _visible_port, db.delete_port)
