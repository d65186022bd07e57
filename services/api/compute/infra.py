"""Read-only views of the cloud itself: limits, quota sets, availability zones, hypervisors, services.

Quotas are fixed defaults (shown, not yet enforced); usage is computed from the live instances.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import asyncpg
from aiohttp import web

from common import exceptions
from services.api.app import CONF, DB, ctx, require_admin
from services.api.compute import queries
from services.api.compute.views import isotime_naive

__all__ = [
    "DEFAULT_QUOTAS",
    "availability_zones",
    "availability_zones_detail",
    "hypervisor_uptime",
    "hypervisor_view",
    "limits",
    "list_aggregates",
    "list_hypervisors",
    "list_services",
    "quota_defaults",
    "quota_set",
    "service_state",
    "show_hypervisor",
]

DEFAULT_QUOTAS: dict[str, int] = {
    "instances": 1000,
    "cores": 4000,
    "ram": 8192000,
    "key_pairs": 100,
    "metadata_items": 128,
    "injected_files": 0,
    "injected_file_content_bytes": 0,
    "injected_file_path_bytes": 0,
    "server_groups": 10,
    "server_group_members": 10,
    "floating_ips": 0,
    "fixed_ips": -1,
    "security_groups": 1,
    "security_group_rules": 0,
}


class NotSupported(exceptions.StratusError):
    code = 501
    title = "notImplemented"


async def hypervisor_uptime(request: web.Request) -> web.Response:
    """GET /os-hypervisors/{id}/uptime: 501, as Nova answers for a driver that cannot tell (clients expect it)."""
    require_admin(request)
    raise NotSupported("Stratus computes do not report host uptime.")


def _service_down_time(request: web.Request) -> float:
    return float(request.app[CONF].scheduler.service_down_time)


def service_state(age: float | None, down_time: float, forced_down: bool = False) -> str:
    """``up`` when the service reported within ``down_time`` seconds."""
    if forced_down or age is None:
        return "down"
    return "up" if age <= down_time else "down"


async def limits(request: web.Request) -> web.Response:
    """GET /limits: the project's fixed quotas and its live usage."""
    c = ctx(request)
    project = request.query.get("tenant_id") or c.project
    if project != c.project_id:
        require_admin(request)
    usage = await request.app[DB].run(lambda conn: queries.project_usage(conn, project))
    q = DEFAULT_QUOTAS
    absolute = {
        "maxTotalInstances": q["instances"],
        "maxTotalCores": q["cores"],
        "maxTotalRAMSize": q["ram"],
        "maxTotalKeypairs": q["key_pairs"],
        "maxServerMeta": q["metadata_items"],
        "maxImageMeta": q["metadata_items"],
        "maxPersonality": q["injected_files"],
        "maxPersonalitySize": q["injected_file_content_bytes"],
        "maxSecurityGroups": q["security_groups"],
        "maxSecurityGroupRules": q["security_group_rules"],
        "maxTotalFloatingIps": q["floating_ips"],
        "maxServerGroups": q["server_groups"],
        "maxServerGroupMembers": q["server_group_members"],
        "totalInstancesUsed": usage["instances"],
        "totalCoresUsed": usage["cores"],
        "totalRAMUsed": usage["ram"],
        "totalSecurityGroupsUsed": 0,
        "totalFloatingIpsUsed": 0,
        "totalServerGroupsUsed": 0,
    }
    return web.json_response({"limits": {"rate": [], "absolute": absolute}})


def _quota_project(request: web.Request) -> str:
    c = ctx(request)
    project = request.match_info["project_id"]
    if project != c.project_id and not c.is_admin:
        raise exceptions.Forbidden("Showing another project's quotas needs the admin role.")
    return project


async def quota_set(request: web.Request) -> web.Response:
    """GET /os-quota-sets/{project_id}[/detail]."""
    project = _quota_project(request)
    if not request.path.endswith("/detail"):
        return web.json_response({"quota_set": {"id": project, **DEFAULT_QUOTAS}})
    usage = await request.app[DB].run(lambda conn: queries.project_usage(conn, project))
    used = {"instances": usage["instances"], "cores": usage["cores"], "ram": usage["ram"]}
    detail = {k: {"limit": v, "in_use": used.get(k, 0), "reserved": 0} for k, v in DEFAULT_QUOTAS.items()}
    return web.json_response({"quota_set": {"id": project, **detail}})


async def quota_defaults(request: web.Request) -> web.Response:
    project = request.match_info["project_id"]
    return web.json_response({"quota_set": {"id": project, **DEFAULT_QUOTAS}})


async def list_aggregates(request: web.Request) -> web.Response:
    """GET /os-aggregates (admin): Stratus has no host aggregates; availability zones come from compute hosts."""
    require_admin(request)
    return web.json_response({"aggregates": []})


async def availability_zones(request: web.Request) -> web.Response:
    """GET /os-availability-zone: zones that hold at least one compute host; available if one of them is up."""
    down_time = _service_down_time(request)
    nodes = await request.app[DB].run(queries.node_states)
    zones: dict[str, bool] = {}
    for n in nodes:
        up = service_state(_age(n), down_time) == "up" and not n["disabled"]
        zones[n["availability_zone"]] = zones.get(n["availability_zone"], False) or up
    info = [{"zoneName": z, "zoneState": {"available": up}, "hosts": None} for z, up in sorted(zones.items())]
    return web.json_response({"availabilityZoneInfo": info})


async def availability_zones_detail(request: web.Request) -> web.Response:
    require_admin(request)
    down_time = _service_down_time(request)
    nodes = await request.app[DB].run(queries.node_states)
    zones: dict[str, dict[str, Any]] = {}
    for n in nodes:
        up = service_state(_age(n), down_time) == "up"
        zone = zones.setdefault(n["availability_zone"], {"available": False, "hosts": {}})
        zone["available"] = zone["available"] or (up and not n["disabled"])
        zone["hosts"][n["host"]] = {
            "nova-compute": {
                "available": up,
                "active": not n["disabled"],
                "updated_at": isotime_naive(n["last_report_at"]),
            }
        }
    info = [
        {"zoneName": z, "zoneState": {"available": v["available"]}, "hosts": v["hosts"]}
        for z, v in sorted(zones.items())
    ]
    return web.json_response({"availabilityZoneInfo": info})


def _age(node: Mapping[str, Any]) -> float | None:
    """Seconds since the host was last heard of: its service heartbeat or its capacity report, the newer."""
    ages = [a for a in (node["service_age"], node["report_age"]) if a is not None]
    return min(ages) if ages else None


def hypervisor_view(node: Mapping[str, Any], down_time: float, *, detail: bool) -> dict[str, Any]:
    state = service_state(_age(node), down_time)
    view: dict[str, Any] = {
        "id": node["id"],
        "hypervisor_hostname": node["hypervisor_hostname"],
        "state": state,
        "status": "disabled" if node["disabled"] else "enabled",
    }
    if detail:
        view.update(
            {
                "hypervisor_type": node["hypervisor_type"],
                "hypervisor_version": node["hypervisor_version"],
                "host_ip": None,
                "vcpus": node["vcpus"],
                "memory_mb": node["memory_mb"],
                "local_gb": node["local_gb"],
                "vcpus_used": node["vcpus_used"],
                "memory_mb_used": node["memory_mb_used"],
                "local_gb_used": node["local_gb_used"],
                "free_ram_mb": node["memory_mb"] - node["memory_mb_used"],
                "free_disk_gb": node["local_gb"] - node["local_gb_used"],
                "disk_available_least": node["local_gb"] - node["local_gb_used"],
                "running_vms": node["running_vms"],
                "current_workload": 0,
                "cpu_info": json.dumps(node["cpu_info"] or {}),  # a JSON string before microversion 2.28
                "service": {
                    "host": node["host"],
                    "id": node["service_id"],
                    "disabled_reason": node["disabled_reason"],
                },
                # Stratus extras: what placement really works with.
                "virt_type": node["virt_type"],
                "availability_zone": node["availability_zone"],
                "cpu_allocation_ratio": node["cpu_allocation_ratio"],
                "ram_allocation_ratio": node["ram_allocation_ratio"],
                "disk_allocation_ratio": node["disk_allocation_ratio"],
                "last_report_at": isotime_naive(node["last_report_at"]),
            }
        )
    return view


async def list_hypervisors(request: web.Request) -> web.Response:
    """GET /os-hypervisors[/detail] (admin)."""
    require_admin(request)
    detail = request.path.endswith("/detail")
    down_time = _service_down_time(request)
    nodes = await request.app[DB].run(queries.node_states)
    pattern = request.query.get("hypervisor_hostname_pattern")
    if pattern:
        nodes = [n for n in nodes if pattern in n["hypervisor_hostname"]]
    return web.json_response({"hypervisors": [hypervisor_view(n, down_time, detail=detail) for n in nodes]})


async def show_hypervisor(request: web.Request) -> web.Response:
    require_admin(request)
    hid = request.match_info["hypervisor_id"]
    nodes = await request.app[DB].run(queries.node_states)
    for n in nodes:
        if n["id"] == hid:
            return web.json_response({"hypervisor": hypervisor_view(n, _service_down_time(request), detail=True)})
    raise exceptions.NotFound(f"Hypervisor with ID {hid} could not be found.")


async def list_services(request: web.Request) -> web.Response:
    """GET /os-services (admin): each service's state from its last heartbeat, and the broker node it uses."""
    require_admin(request)
    down_time = _service_down_time(request)

    async def work(conn: asyncpg.Connection) -> list:
        return await queries.list_services(conn)

    rows = await request.app[DB].run(work)
    binary, host = request.query.get("binary"), request.query.get("host")
    services = []
    for r in rows:
        if (binary and r["binary"] != binary) or (host and r["host"] != host):
            continue
        is_compute = "compute" in r["binary"]
        services.append(
            {
                "id": r["id"],
                "binary": r["binary"],
                "host": r["host"],
                "zone": (r["node_zone"] or "nova") if is_compute else "internal",
                "status": "disabled" if r["disabled"] else "enabled",
                "state": service_state(r["age"], down_time, r["forced_down"]),
                "updated_at": isotime_naive(r["last_seen_at"]),
                "disabled_reason": r["disabled_reason"],
                "forced_down": r["forced_down"],
                "broker_node": r["broker_node"],
                "version": r["version"],
            }
        )
    return web.json_response({"services": services})
