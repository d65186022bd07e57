"""``/servers``: boot (validate → insert rows and actions in one transaction → cast to the scheduler), list,
show, rename, delete.

The API never waits on a compute: a boot answers 202 once the scheduler has the request; a delete answers 204
once the owning compute has the order (or at once, for a server no host holds).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import ipaddress
import logging
import re
import secrets
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

import asyncpg
from aiohttp import web

from common import exceptions, objects
from common.context import RequestContext
from common.db import actions, compute_nodes, instances
from common.db import keypairs as keypairs_db
from common.db import networks as networks_db
from common.db import server_groups as server_groups_db
from common.db.instances import TaskState, VmState
from services.api.app import CONF, DB, RPC, ctx, paginate
from services.api.compute import queries
from services.api.compute.views import server_summary, server_view, status_states
from services.api.compute.wire import instance_to_wire
from services.api.validation import json_body
from services.compute.rpcapi import ComputeAPI
from services.scheduler.faults import error_in
from services.scheduler.rpcapi import SchedulerAPI

__all__ = [
    "BootRequest",
    "check_name",
    "create_server",
    "delete_server",
    "flavor_snapshot",
    "get_visible",
    "image_snapshot",
    "list_servers",
    "parse_boot_request",
    "sanitize_hostname",
    "show_server",
    "update_server",
]

LOG = logging.getLogger(__name__)

MAX_LIMIT = 1000  # Nova's osapi_max_limit: the longest page a listing returns


def base_url(request: web.Request) -> str:
    return request.app[CONF].api.public_endpoint.rstrip("/")


# ----- validate (pure) ----------------------------------------------------------------------------------------


@dataclass
class BootRequest:
    """A server create body, checked for everything that needs no database."""

    name: str
    flavor_id: str
    image_id: str
    networks: str | list[dict[str, Any]]  # "auto", "none" or [{"uuid"|"port", "fixed_ip"?}]
    min_count: int
    max_count: int
    key_name: str | None = None
    user_data: str | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    availability_zone: str | None = None
    access_ip_v4: str | None = None
    return_reservation_id: bool = False
    config_drive: bool = False
    scheduler_hints: dict[str, Any] = field(default_factory=dict)


def _ref_id(ref: str | int) -> str:
    """Nova accepts an id or a URL whose last path segment is the id."""
    return str(ref).rstrip("/").rsplit("/", 1)[-1]


def _truthy(value: Any) -> bool:
    return value is True or (isinstance(value, str) and value.lower() in ("true", "1", "yes", "on"))


def check_name(name: str, what: str = "name") -> None:
    if name != name.strip():
        raise exceptions.BadRequest(f"Invalid input for field/attribute {what}: leading or trailing whitespace.")


def parse_boot_request(body: Mapping[str, Any], max_servers: int) -> BootRequest:
    """Checks beyond the schema: counts, user_data encoding, image reference, addresses. Raises ``BadRequest``."""
    s = body["server"]
    check_name(s["name"])
    min_count = int(s.get("min_count", 1))
    max_count = int(s.get("max_count", min_count))
    if min_count < 1 or max_count < 1:
        raise exceptions.BadRequest("min_count and max_count must be at least 1.")
    if min_count > max_count:
        raise exceptions.BadRequest(f"min_count ({min_count}) may not be greater than max_count ({max_count}).")
    if max_count > max_servers:
        raise exceptions.BadRequest(f"max_count ({max_count}) is above this cloud's limit of {max_servers}.")

    image_ref = s.get("imageRef") or ""
    for bdm in s.get("block_device_mapping_v2", []):
        if bdm.get("uuid"):
            if image_ref and _ref_id(image_ref) != bdm["uuid"]:
                raise exceptions.BadRequest("block_device_mapping_v2 names another image than imageRef.")
            image_ref = image_ref or bdm["uuid"]
    if not image_ref:
        raise exceptions.BadRequest("imageRef is required: Stratus boots servers from images (it has no volumes).")

    user_data = s.get("user_data")
    if user_data is not None:
        try:
            base64.b64decode(user_data, validate=True)
        except (binascii.Error, ValueError):
            raise exceptions.BadRequest("Invalid input for field/attribute user_data: not valid base64.") from None

    # Before microversion 2.37 an absent or empty list means what "auto" means now (openstackclient sends []).
    networks: str | list[dict[str, Any]] = s.get("networks") or "auto"
    if isinstance(networks, list):
        for net in networks:
            if "fixed_ip" in net:
                try:
                    ipaddress.ip_address(net["fixed_ip"])
                except ValueError:
                    raise exceptions.BadRequest(f"Invalid fixed IP address {net['fixed_ip']!r}.") from None
                if max_count > 1:
                    raise exceptions.BadRequest("A fixed IP address cannot be requested for more than one server.")
            if "port" in net and max_count > 1:
                raise exceptions.BadRequest(
                    "Unable to launch multiple instances with a single configured port ID. Please launch your "
                    "instance one by one with different ports."
                )

    access_ip = s.get("accessIPv4")
    if access_ip is not None:
        try:
            ipaddress.IPv4Address(access_ip)
        except ValueError:
            raise exceptions.BadRequest(f"Invalid input for field/attribute accessIPv4: {access_ip!r}.") from None

    az = s.get("availability_zone")
    if az is not None and ":" in az:
        raise exceptions.BadRequest("Forcing a host with 'zone:host' is not supported.")

    return BootRequest(
        name=s["name"],
        flavor_id=_ref_id(s["flavorRef"]),
        image_id=_ref_id(image_ref),
        networks=networks,
        min_count=min_count,
        max_count=max_count,
        key_name=s.get("key_name"),
        user_data=user_data,
        metadata=dict(s.get("metadata", {})),
        availability_zone=az,
        access_ip_v4=access_ip,
        return_reservation_id=_truthy(s.get("return_reservation_id", False)),
        config_drive=_truthy(s.get("config_drive")),
        scheduler_hints=_scheduler_hints(body),
    )


def _scheduler_hints(body: Mapping[str, Any]) -> dict[str, Any]:
    """``os:scheduler_hints`` (or its old alias), instance-id hints as lists."""
    hints = dict(body.get("os:scheduler_hints") or body.get("OS-SCH-HNT:scheduler_hints") or {})
    for key in ("same_host", "different_host"):
        if isinstance(hints.get(key), str):
            hints[key] = [hints[key]]
    return hints


_HOSTNAME_BAD = re.compile(r"[^\w.-]+", re.ASCII)


def sanitize_hostname(name: str, default: str) -> str:
    """Nova's rule: lower case, spaces and underscores to dashes, other characters dropped, at most 63."""
    h = name.lower().replace(" ", "-").replace("_", "-")
    h = _HOSTNAME_BAD.sub("", h)[:63].strip("-.")
    return h or default


# ----- prerequisites (read-only) ------------------------------------------------------------------------------


def flavor_snapshot(flavor: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "id": flavor["id"],
        "name": flavor["name"],
        "vcpus": flavor["vcpus"],
        "ram_mb": flavor["ram_mb"],
        "disk_gb": flavor["disk_gb"],
        "ephemeral_gb": flavor["ephemeral_gb"],
        "swap_mb": flavor["swap_mb"],
        "extra_specs": flavor["extra_specs"] or {},
    }


def image_snapshot(image: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "id": image["id"],
        "name": image["name"],
        "location": image["location"],
        "checksum": image["checksum"],
        "os_hash_algo": image["os_hash_algo"],
        "os_hash_value": image["os_hash_value"],
        "disk_format": image["disk_format"],
        "container_format": image["container_format"],
        "size": image["size"],
        "min_disk": image["min_disk"],
        "min_ram": image["min_ram"],
        "properties": image["properties"] or {},
    }


async def _boot_reads(
    conn: asyncpg.Connection, c: RequestContext, boot: BootRequest
) -> tuple[Mapping[str, Any], Mapping[str, Any], set[str]]:
    """The boot's flavor and image, and which networks it names the caller may attach to, read in one round trip;
    400 for a flavor or image the caller may not use."""
    named = [n["uuid"] for n in boot.networks if "uuid" in n] if isinstance(boot.networks, list) else []
    flavor, image, visible = await queries.boot_reads(conn, boot.flavor_id, boot.image_id, named, c.scope)
    if flavor is None or (not flavor["is_public"] and not c.is_admin):
        raise exceptions.BadRequest(f"Flavor {boot.flavor_id} could not be found.")
    return flavor, _check_image(c, boot.image_id, image, flavor), visible


def _check_image(
    c: RequestContext, image_id: str, image: Mapping[str, Any] | None, flavor: Mapping[str, Any]
) -> Mapping[str, Any]:
    if image is None or not (
        c.is_admin or image["visibility"] in ("public", "community") or image["project_id"] == c.project_id
    ):
        raise exceptions.BadRequest(f"Image {image_id} could not be found.")
    if image["status"] != "active":
        raise exceptions.BadRequest(f"Image {image_id} is not active (status {image['status']}).")
    if not image["location"]:
        raise exceptions.BadRequest(f"Image {image_id} has no data to boot from.")
    if image["min_ram"] and flavor["ram_mb"] < image["min_ram"]:
        raise exceptions.BadRequest(
            f"Flavor's memory is too small for requested image: {flavor['ram_mb']} MiB < min_ram {image['min_ram']}."
        )
    if flavor["disk_gb"]:
        if image["min_disk"] and flavor["disk_gb"] < image["min_disk"]:
            raise exceptions.BadRequest(
                f"Flavor's disk is too small for requested image: {flavor['disk_gb']} GiB < min_disk "
                f"{image['min_disk']}."
            )
        if image["size"] and image["size"] > flavor["disk_gb"] * 1024**3:
            raise exceptions.BadRequest(
                f"Flavor's disk is too small for requested image: the image is {image['size']} bytes, the flavor's "
                f"disk {flavor['disk_gb']} GiB."
            )
    return image


async def _networks(
    conn: asyncpg.Connection, c: RequestContext, requested: str | list[dict[str, Any]], visible: set[str]
) -> list[dict[str, Any]]:
    """The request's networks resolved to ``[{"uuid": ...}|{"port": ...}]``; 'auto' picks the only candidate.
    ``visible``: the networks named by uuid that the caller may attach to (``_boot_reads``)."""
    project = c.scope
    if requested == "none":
        return []
    if requested == "auto":
        candidates = await queries.visible_networks(conn, c.project)
        if not candidates:
            raise exceptions.BadRequest(
                f"No network is available to project {c.project_id}: create one, or ask for networks 'none'."
            )
        if len(candidates) > 1:
            names = ", ".join(f"{n['name'] or '-'} ({n['id']})" for n in candidates)
            raise exceptions.BadRequest(
                f"Multiple possible networks found, use a Network ID to be more specific: {names}."
            )
        return [{"uuid": candidates[0]["id"]}]
    out = []
    for net in requested:
        if "port" in net:
            port = await queries.get_port(conn, net["port"])
            if port is None or (project is not None and port["project_id"] != project):
                raise exceptions.BadRequest(f"Port {net['port']} could not be found.")
            out.append({"port": port["id"], "uuid": port["network_id"]})
            continue
        if net["uuid"] not in visible:
            raise exceptions.BadRequest(f"Network {net['uuid']} could not be found.")
        entry = {"uuid": net["uuid"]}
        if "fixed_ip" in net:
            entry["fixed_ip"] = net["fixed_ip"]
        out.append(entry)
    return out


async def _availability_zone(conn: asyncpg.Connection, az: str | None) -> None:
    if az is None:
        return
    hosts = [n["host"] for n in await compute_nodes.list_nodes(conn)]
    zones = set((await queries.host_zones(conn, hosts)).values())
    if az not in zones:
        raise exceptions.BadRequest(
            f"The requested availability zone {az!r} is not available (zones with compute hosts: "
            f"{', '.join(sorted(zones)) or 'none'})."
        )


async def _check_hints(conn: asyncpg.Connection, c: RequestContext, hints: Mapping[str, Any]) -> None:
    """The group and the instances named in hints must exist and be the caller's (400 otherwise)."""
    group_id = hints.get("group")
    if group_id is not None:
        group = await server_groups_db.get(conn, group_id)
        if group is None or (group["project_id"] != c.project_id and not c.is_admin):
            raise exceptions.BadRequest(f"Invalid scheduler hint group: server group {group_id} not found.")
    for key in ("same_host", "different_host"):
        for iid in hints.get(key, ()):
            row = await instances.get(conn, iid)
            if row is None or (row["project_id"] != c.project_id and not c.is_admin):
                raise exceptions.BadRequest(f"Invalid scheduler hint {key}: server {iid} not found.")


# ----- handlers -----------------------------------------------------------------------------------------------


async def create_server(request: web.Request) -> web.Response:
    """POST /servers: 202 once the rows (instances, actions, their ports and addresses) exist and the scheduler
    has each build request.

    The ports are made in the same transaction, so a full subnet or a port in use is a 409 here and nothing is
    left behind. A cast the broker does not take leaves the server in ERROR with a fault saying so, never
    silently in BUILD.
    """
    c = ctx(request)
    conf = request.app[CONF]
    boot = parse_boot_request(await json_body(request), conf.api.max_servers_per_request)

    async def work(conn: asyncpg.Connection) -> list[tuple[asyncpg.Record, list[dict[str, Any]]]]:
        flavor, image, visible = await _boot_reads(conn, c, boot)
        networks = await _networks(conn, c, boot.networks, visible)
        key_data = None
        if boot.key_name is not None:
            key = await keypairs_db.get(conn, c.user_id, boot.key_name)
            if key is None:
                raise exceptions.BadRequest(f"Invalid key_name provided: {boot.key_name!r} is not one of your keys.")
            key_data = key["public_key"]
        await _availability_zone(conn, boot.availability_zone)
        await _check_hints(conn, c, boot.scheduler_hints)
        reservation_id = "r-" + secrets.token_hex(4)
        rows = []
        for index in range(boot.max_count):
            name = boot.name if boot.max_count == 1 else f"{boot.name}-{index + 1}"
            iid = str(uuid.uuid4())
            row = await instances.create(
                conn,
                {
                    "id": iid,
                    "project_id": c.project,
                    "user_id": c.user_id,
                    "name": name,
                    "hostname": sanitize_hostname(name, f"server-{iid}"),
                    "flavor_id": flavor["id"],
                    "flavor": flavor_snapshot(flavor),
                    "image_id": image["id"],
                    "image": image_snapshot(image),
                    "requested_networks": networks,
                    "vm_state": VmState.BUILDING,
                    "task_state": TaskState.SCHEDULING,
                    "availability_zone": boot.availability_zone,
                    "key_name": boot.key_name,
                    "key_data": key_data,
                    "user_data": boot.user_data,
                    "metadata": boot.metadata,
                    "reservation_id": reservation_id,
                    "launch_index": index,
                    "access_ip_v4": boot.access_ip_v4,
                    "scheduler_hints": boot.scheduler_hints,
                    "config_drive": boot.config_drive,
                },
                request_id=c.request_id,
                action="create",
            )
            if boot.scheduler_hints.get("group"):
                await server_groups_db.add_member(conn, boot.scheduler_hints["group"], iid)
            ports = await networks_db.attach_instance_ports(
                conn, instance_id=iid, project_id=c.project_id, hostname=row["hostname"], networks=networks,
                base_mac=conf.network.base_mac,
            )  # fmt: skip
            rows.append((row, ports))
        return rows

    made = await request.app[DB].run(work)
    rows = [row for row, _ in made]
    scheduler = SchedulerAPI(request.app[RPC])
    if len(made) == 1:
        results = await asyncio.gather(
            scheduler.build_instances(c, objects.request_spec_from_instance(*made[0])), return_exceptions=True
        )
    else:  # a multi-create batch is placed together, by one scheduler, in launch order, all or none at min_count
        results = await asyncio.gather(
            scheduler.build_instances_batch(
                c, [objects.request_spec_from_instance(r, p, boot.min_count) for r, p in made]
            ),
            return_exceptions=True,
        )
        results = results * len(rows)
    failed = [(row, err) for row, err in zip(rows, results, strict=True) if isinstance(err, BaseException)]
    if failed:
        await _fail_unscheduled(request, c, failed)
    LOG.info("accepted %d server(s) %s", len(rows), ", ".join(r["id"] for r in rows))
    if boot.return_reservation_id:
        return web.json_response({"reservation_id": rows[0]["reservation_id"]}, status=202)
    first = rows[0]
    return web.json_response(
        {
            "server": {
                "id": first["id"],
                "links": server_summary(first, base_url(request))["links"],
                "OS-DCF:diskConfig": "MANUAL",
                "security_groups": [{"name": "default"}],
            }
        },
        status=202,
    )


async def _fail_unscheduled(
    request: web.Request, c: RequestContext, failed: list[tuple[asyncpg.Record, BaseException]]
) -> None:
    """The scheduler never got these build requests: ERROR them with the reason (``error_in``: fault, ports
    released, action closed), so nobody waits on a BUILD."""

    async def work(conn: asyncpg.Connection) -> None:
        for row, err in failed:
            reason = getattr(err, "message", None) or str(err) or type(err).__name__
            msg = f"The build request could not be handed to a scheduler: {reason}"
            LOG.error("instance %s: %s", row["id"], msg)
            details = f"{type(err).__name__} casting build_instances to topic 'scheduler' (request {c.request_id})"
            failed_here = await error_in(
                conn, c, row["id"], msg, code=503, host=None, details=details,
                expected_task_state=[TaskState.SCHEDULING],
            )  # fmt: skip
            if failed_here:
                await actions.add_event(
                    conn, instance_id=row["id"], request_id=c.request_id, event="api_schedule_instance",
                    result="Error", host=None, details=msg,
                )  # fmt: skip

    try:
        await request.app[DB].run(work)
    except Exception:
        LOG.exception("could not record the failed build request of %s", [r["id"] for r, _ in failed])
        raise


async def get_visible(
    conn: asyncpg.Connection, c: RequestContext, server_id: str, *, with_deleted: bool = False
) -> asyncpg.Record:
    """The server if the caller may see it; ``NotFound`` otherwise (other projects' servers do not exist)."""
    row = await instances.get(conn, server_id, with_deleted=with_deleted)
    if row is None or (not c.is_admin and row["project_id"] != c.project_id):
        raise exceptions.NotFound(f"Instance {server_id} could not be found.")
    return row


@dataclass
class _Details:
    """What a detailed server view needs beyond the row, fetched for a whole page at once."""

    addresses: dict[str, list] = field(default_factory=dict)
    faults: dict[str, Any] = field(default_factory=dict)
    zones: dict[str, str] = field(default_factory=dict)

    def view(self, row: Mapping[str, Any], base: str, is_admin: bool) -> dict[str, Any]:
        return server_view(
            row,
            base=base,
            addresses=self.addresses.get(row["id"], ()),
            fault=self.faults.get(row["id"]),
            is_admin=is_admin,
            host_zone=self.zones.get(row["host"]) if row["host"] else None,
        )


async def _details(conn: asyncpg.Connection, rows: list[asyncpg.Record]) -> _Details:
    addresses = await queries.addresses_for(conn, [r["id"] for r in rows])
    errored = [r["id"] for r in rows if r["vm_state"] == VmState.ERROR]
    faults = await instances.latest_faults(conn, errored) if errored else {}
    hosts = {r["host"] for r in rows if r["host"] and not r["availability_zone"]}
    zones = await queries.host_zones(conn, sorted(hosts)) if hosts else {}
    return _Details(addresses, faults, zones)


async def show_server(request: web.Request) -> web.Response:
    c = ctx(request)
    sid = request.match_info["server_id"]

    async def work(conn: asyncpg.Connection) -> tuple:
        row = await get_visible(conn, c, sid)
        return row, await _details(conn, [row])

    row, details = await request.app[DB].run(work)
    return web.json_response({"server": details.view(row, base_url(request), c.is_admin)})


def _list_filters(request: web.Request, c: RequestContext) -> dict[str, Any]:
    q = request.query
    all_tenants = "all_tenants" in q and q["all_tenants"].lower() not in ("0", "false", "no", "off")
    if all_tenants and not c.is_admin:
        raise exceptions.Forbidden("Policy doesn't allow all_tenants: it needs the admin role.")
    project = q.get("project_id") or q.get("tenant_id")
    if project is not None and project != c.project_id and not c.is_admin:
        raise exceptions.Forbidden("Listing another project's servers needs the admin role.")
    filters: dict[str, Any] = {"project_id": project or (None if all_tenants else c.project)}
    if "name" in q:
        filters["name"] = q["name"]
    if "host" in q:
        if not c.is_admin:
            raise exceptions.Forbidden("Filtering servers by host needs the admin role.")
        filters["host"] = q["host"]
    return filters


async def list_servers(request: web.Request) -> web.Response:
    """GET /servers and /servers/detail: filters name (regex), status, all_tenants, host; limit/marker pages."""
    c = ctx(request)
    detail = request.path.endswith("/detail")
    filters = _list_filters(request, c)
    limit, marker = paginate(request.query)
    limit = MAX_LIMIT if limit is None else min(limit, MAX_LIMIT)
    statuses = request.query.getall("status", [])
    states = status_states(statuses) if statuses else None

    async def work(conn: asyncpg.Connection) -> tuple:
        if marker is not None and await instances.get(conn, marker) is None:
            raise exceptions.BadRequest(f"marker [{marker}] not found")
        rows = await instances.list_(conn, marker=marker, limit=limit, states=states, **filters)
        return rows, (await _details(conn, rows) if detail else None)

    try:
        rows, details = await request.app[DB].run(work)
    except asyncpg.InvalidRegularExpressionError as e:
        raise exceptions.BadRequest(f"Invalid name filter {request.query.get('name')!r}: {e}") from None
    base = base_url(request)
    if details is not None:
        items = [details.view(r, base, c.is_admin) for r in rows]
    else:
        items = [server_summary(r, base) for r in rows]
    doc: dict[str, Any] = {"servers": items}
    if rows and len(rows) == limit:
        params = [(k, v) for k, v in request.query.items() if k not in ("marker", "limit")]
        params += [("limit", str(limit)), ("marker", rows[-1]["id"])]
        path = "servers/detail" if detail else "servers"
        doc["servers_links"] = [{"rel": "next", "href": f"{base}/compute/v2.1/{path}?{urlencode(params)}"}]
    return web.json_response(doc)


async def update_server(request: web.Request) -> web.Response:
    """PUT /servers/{id}: rename (the hostname stays: the guest already has it)."""
    c = ctx(request)
    sid = request.match_info["server_id"]
    s = (await json_body(request))["server"]
    values: dict[str, Any] = {}
    if "name" in s:
        check_name(s["name"])
        values["name"] = s["name"]
    if "accessIPv4" in s:
        try:
            values["access_ip_v4"] = str(ipaddress.IPv4Address(s["accessIPv4"]))
        except ValueError:
            raise exceptions.BadRequest(f"Invalid input for field/attribute accessIPv4: {s['accessIPv4']!r}.") from None

    async def work(conn: asyncpg.Connection) -> tuple:
        row = await get_visible(conn, c, sid)
        if values:
            row = await instances.update(conn, sid, values) or row
        return row, await _details(conn, [row])

    row, details = await request.app[DB].run(work)
    return web.json_response({"server": details.view(row, base_url(request), c.is_admin)})


async def delete_server(request: web.Request) -> web.Response:
    """DELETE /servers/{id}: 204. A placed server is handed to its compute (task_state deleting); a server no host
    holds is deleted here, with its claim released.
    """
    c = ctx(request)
    sid = request.match_info["server_id"]

    async def work(conn: asyncpg.Connection) -> tuple[asyncpg.Record, str | None]:
        row = await get_visible(conn, c, sid)
        await actions.start_action(
            conn,
            instance_id=sid,
            request_id=c.request_id,
            action="delete",
            project_id=row["project_id"],
            user_id=c.user_id,
        )
        if row["host"]:
            updated = await instances.update(conn, sid, {"task_state": TaskState.DELETING})
            return updated or row, row["task_state"]
        await _delete_locally(conn, c, row)
        return row, None

    row, previous_task_state = await request.app[DB].run(work)
    if row["host"]:
        await _cast_terminate(request, c, row, previous_task_state)
    return web.Response(status=204)


async def _delete_locally(conn: asyncpg.Connection, c: RequestContext, row: Mapping[str, Any]) -> None:
    """Delete a server no compute acts on: the row, its claim and its ports, in the caller's transaction."""
    await instances.mark_deleted(conn, row["id"])
    await compute_nodes.release(conn, row["id"])
    await networks_db.release_instance_ports(conn, row["id"])
    await actions.finish_action(conn, row["id"], c.request_id, message="Success")


async def _cast_terminate(
    request: web.Request, c: RequestContext, row: asyncpg.Record, previous_task_state: str | None
) -> None:
    host = row["host"]
    try:
        await ComputeAPI(request.app[RPC]).terminate_instance(c, host, instance_to_wire(row))
        return
    except exceptions.NotFound:
        # No queue for compute.<host>: that compute is gone for good and nobody will ever act on the order.
        LOG.warning("instance %s: no compute consumes compute.%s; deleting it here", row["id"], host)
    except exceptions.StratusError as e:
        # The broker did not take the order: undo the task state so the user can simply retry.
        await request.app[DB].run(
            lambda conn: instances.update(
                conn, row["id"], {"task_state": previous_task_state}, expected_task_state=[TaskState.DELETING]
            )
        )
        raise exceptions.ServiceUnavailable(
            f"Could not hand the delete of {row['id']} to compute host {host}: {e.message}. Retry later."
        ) from e

    async def work(conn: asyncpg.Connection) -> None:
        await _delete_locally(conn, c, row)

    await request.app[DB].run(work)
