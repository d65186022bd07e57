"""Nova 2.1 response shapes: pure functions of database rows, so they are testable without a server."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

from common.db.instances import TaskState, VmState

__all__ = [
    "action_view",
    "addresses_view",
    "event_view",
    "fault_view",
    "flavor_view",
    "host_id",
    "isotime",
    "isotime_naive",
    "server_status",
    "server_summary",
    "server_view",
    "status_states",
]

# vm_state -> {task_state: status}; None is the default for that vm_state (Nova's _STATE_MAP, trimmed).
_STATUS: dict[str, dict[str | None, str]] = {
    VmState.BUILDING: {None: "BUILD"},
    VmState.ACTIVE: {None: "ACTIVE", TaskState.REBOOTING: "REBOOT", TaskState.REBOOTING_HARD: "HARD_REBOOT"},
    VmState.STOPPED: {None: "SHUTOFF"},
    VmState.ERROR: {None: "ERROR"},
    VmState.DELETED: {None: "DELETED"},
}


def status_states(statuses: Iterable[str]) -> list[tuple[str, str | None, list[str]]]:
    """The (vm_state, task_state) pairs a ``status`` list filter matches, as ``instances.list_`` takes them:
    ``(vm_state, task_state, [])`` for a status tied to a task, ``(vm_state, None, excluded)`` for a vm_state's
    default status (any task state but the ``excluded`` ones, which have statuses of their own)."""
    wanted = {s.upper() for s in statuses}
    return [
        (vm, task, [] if task is not None else [t for t in by_task if t is not None])
        for vm, by_task in _STATUS.items()
        for task, status in by_task.items()
        if status in wanted
    ]


def server_status(vm_state: str, task_state: str | None) -> str:
    """The OpenStack ``status`` for a (vm_state, task_state) pair; ``UNKNOWN`` for a pair Stratus never makes."""
    by_task = _STATUS.get(vm_state)
    if by_task is None:
        return "UNKNOWN"
    return by_task.get(task_state, by_task[None])


def isotime(dt: datetime | None) -> str | None:
    """``2019-04-23T15:19:09Z``: Nova's format for created/updated and faults."""
    return dt.strftime("%Y-%m-%dT%H:%M:%SZ") if dt is not None else None


def isotime_naive(dt: datetime | None) -> str | None:
    """``2019-04-23T15:19:15.000000``: Nova's format for launched_at and instance actions (no zone, UTC)."""
    return dt.strftime("%Y-%m-%dT%H:%M:%S.%f") if dt is not None else None


def host_id(project_id: str, host: str | None) -> str:
    """Nova's ``hostId``: an opaque per-project name of the host, so tenants can tell co-location apart."""
    if not host:
        return ""
    return hashlib.sha224((project_id + host).encode()).hexdigest()


def _links(base: str, collection: str, rid: str) -> list[dict[str, str]]:
    return [
        {"rel": "self", "href": f"{base}/compute/v2.1/{collection}/{rid}"},
        {"rel": "bookmark", "href": f"{base}/compute/{collection}/{rid}"},
    ]


def _ref(base: str, collection: str, rid: str) -> dict[str, Any]:
    return {"id": rid, "links": [{"rel": "bookmark", "href": f"{base}/compute/{collection}/{rid}"}]}


def addresses_view(rows: Iterable[Mapping[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Group address rows (``network_name``, ``ip_address``, ``ip_version``, ``mac_address``) by network."""
    out: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        out.setdefault(r["network_name"], []).append(
            {
                "addr": r["ip_address"],
                "version": r["ip_version"],
                "OS-EXT-IPS:type": "fixed",
                "OS-EXT-IPS-MAC:mac_addr": r["mac_address"],
            }
        )
    return out


def fault_view(fault: Mapping[str, Any], *, is_admin: bool) -> dict[str, Any]:
    """The ``fault`` of an ERROR server. Its details say why a build failed, so owners see them too."""
    view = {"code": fault["code"], "message": fault["message"], "created": isotime(fault["created_at"])}
    if fault["details"]:
        view["details"] = fault["details"]
    if is_admin and fault.get("host"):
        view["host"] = fault["host"]
    return view


def server_summary(row: Mapping[str, Any], base: str) -> dict[str, Any]:
    return {"id": row["id"], "name": row["name"], "links": _links(base, "servers", row["id"])}


def server_view(
    row: Mapping[str, Any],
    *,
    base: str,
    addresses: Sequence[Mapping[str, Any]] = (),
    fault: Mapping[str, Any] | None = None,
    is_admin: bool = False,
    host_zone: str | None = None,
) -> dict[str, Any]:
    """A server as ``GET /servers/{id}`` shows it at microversion 2.1 (plus Stratus' extra admin fields).

    The zone shown is the one asked for at boot, else the zone of the host the server runs on (``host_zone``).
    """
    view: dict[str, Any] = {
        "id": row["id"],
        "name": row["name"],
        "status": server_status(row["vm_state"], row["task_state"]),
        "tenant_id": row["project_id"],
        "user_id": row["user_id"],
        "metadata": row["metadata"] or {},
        "hostId": host_id(row["project_id"], row["host"]),
        "image": _ref(base, "images", row["image_id"]) if row["image_id"] else "",
        "flavor": _ref(base, "flavors", row["flavor_id"]),
        "created": isotime(row["created_at"]),
        "updated": isotime(row["updated_at"]),
        "addresses": addresses_view(addresses),
        "accessIPv4": row["access_ip_v4"] or "",
        "accessIPv6": "",
        "links": _links(base, "servers", row["id"]),
        "OS-DCF:diskConfig": "MANUAL",
        "progress": 0,
        "OS-EXT-AZ:availability_zone": row["availability_zone"] or host_zone or "",
        "config_drive": "True" if row.get("config_drive") else "",
        "key_name": row["key_name"],
        "OS-SRV-USG:launched_at": isotime_naive(row["launched_at"]),
        "OS-SRV-USG:terminated_at": isotime_naive(row["terminated_at"]),
        "OS-EXT-STS:vm_state": row["vm_state"],
        "OS-EXT-STS:task_state": row["task_state"],
        "OS-EXT-STS:power_state": row["power_state"],
        "os-extended-volumes:volumes_attached": [],
        "security_groups": [{"name": "default"}],
    }
    if is_admin:
        view["OS-EXT-SRV-ATTR:host"] = row["host"]
        view["OS-EXT-SRV-ATTR:hypervisor_hostname"] = row["node"]
        view["OS-EXT-SRV-ATTR:instance_name"] = f"instance-{row['id']}"
        view["OS-EXT-SRV-ATTR:hostname"] = row["hostname"]
        view["OS-EXT-SRV-ATTR:reservation_id"] = row["reservation_id"]
        view["OS-EXT-SRV-ATTR:launch_index"] = row["launch_index"]
    if fault is not None and row["vm_state"] == VmState.ERROR:
        view["fault"] = fault_view(fault, is_admin=is_admin)
    return view


def flavor_view(row: Mapping[str, Any], base: str, *, detail: bool = True) -> dict[str, Any]:
    view: dict[str, Any] = {"id": row["id"], "name": row["name"], "links": _links(base, "flavors", row["id"])}
    if detail:
        view.update(
            {
                "ram": row["ram_mb"],
                "vcpus": row["vcpus"],
                "disk": row["disk_gb"],
                "OS-FLV-EXT-DATA:ephemeral": row["ephemeral_gb"],
                "OS-FLV-DISABLED:disabled": False,
                "swap": row["swap_mb"] or "",
                "rxtx_factor": row["rxtx_factor"],
                "os-flavor-access:is_public": row["is_public"],
            }
        )
    return view


def action_view(row: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "action": row["action"],
        "instance_uuid": row["instance_id"],
        "request_id": row["request_id"],
        "user_id": row["user_id"],
        "project_id": row["project_id"],
        "start_time": isotime_naive(row["start_time"]),
        "finish_time": isotime_naive(row["finish_time"]),
        "message": row["message"],
    }


def event_view(row: Mapping[str, Any], *, is_admin: bool) -> dict[str, Any]:
    """An action event. ``details`` carries the cause of a failed step, which is what the owner needs to know."""
    view = {
        "event": row["event"],
        "start_time": isotime_naive(row["start_time"]),
        "finish_time": isotime_naive(row["finish_time"]),
        "result": row["result"],
        "host": row["host"] or "",
        "details": row["details"],
    }
    if is_admin:
        view["traceback"] = row["details"]
    return view
