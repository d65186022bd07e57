"""Shapes of Compute responses, as ``views`` and the handlers build them (the route table and OpenAPI use them)."""

from __future__ import annotations

from services.api.compute.infra import DEFAULT_QUOTAS
from services.api.shapes import BOOL, INT, LINKS, NULL, NUM, OBJ, STR, arr, nullable, obj, one

NSTR = nullable(STR)
_REF = obj({"id": STR, "links": LINKS}, required=("id", "links"))

VERSION = obj(
    {"id": STR, "status": STR, "version": STR, "min_version": STR, "updated": STR, "links": LINKS,
     "media-types": arr(OBJ)},
    required=("id", "status", "version", "min_version", "links"),
)  # fmt: skip
VERSIONS = obj({"versions": arr(VERSION)}, required=("versions",))
VERSION_DOC = obj({"version": VERSION}, required=("version",))

_ADDRESS = obj({"addr": STR, "version": INT, "OS-EXT-IPS:type": STR, "OS-EXT-IPS-MAC:mac_addr": STR})
_FAULT = obj({"code": INT, "message": STR, "created": NSTR, "details": STR, "host": STR}, required=("code", "message"))
SERVER_SUMMARY = obj({"id": STR, "name": STR, "links": LINKS}, required=("id", "name", "links"))
SERVER = obj(
    {
        "id": STR, "name": STR, "status": STR, "tenant_id": STR, "user_id": STR,
        "metadata": {"type": "object", "additionalProperties": STR}, "hostId": STR,
        "image": one(_REF, {"const": ""}), "flavor": _REF, "created": STR, "updated": STR,
        "addresses": {"type": "object", "additionalProperties": arr(_ADDRESS)},
        "accessIPv4": STR, "accessIPv6": STR, "links": LINKS, "OS-DCF:diskConfig": STR, "progress": INT,
        "OS-EXT-AZ:availability_zone": STR, "config_drive": STR, "key_name": NSTR,
        "OS-SRV-USG:launched_at": NSTR, "OS-SRV-USG:terminated_at": NSTR, "OS-EXT-STS:vm_state": STR,
        "OS-EXT-STS:task_state": NSTR, "OS-EXT-STS:power_state": INT,
        "os-extended-volumes:volumes_attached": arr(OBJ), "security_groups": arr(obj({"name": STR})),
        "OS-EXT-SRV-ATTR:host": NSTR, "OS-EXT-SRV-ATTR:hypervisor_hostname": NSTR,
        "OS-EXT-SRV-ATTR:instance_name": STR, "OS-EXT-SRV-ATTR:hostname": STR,
        "OS-EXT-SRV-ATTR:reservation_id": NSTR, "OS-EXT-SRV-ATTR:launch_index": INT, "fault": _FAULT,
    },
    required=("id", "name", "status", "tenant_id", "user_id", "metadata", "links", "addresses", "flavor"),
)  # fmt: skip
SERVER_ONE = obj({"server": SERVER}, required=("server",))
SERVERS = obj({"servers": arr(SERVER_SUMMARY), "servers_links": LINKS}, required=("servers",))
SERVERS_DETAIL = obj({"servers": arr(SERVER), "servers_links": LINKS}, required=("servers",))
SERVER_CREATED = one(
    obj(
        {"server": obj({"id": STR, "links": LINKS, "OS-DCF:diskConfig": STR, "security_groups": arr(OBJ)},
                       required=("id", "links"))},
        required=("server",),
    ),
    obj({"reservation_id": STR}, required=("reservation_id",)),
)  # fmt: skip
CONSOLE_OUTPUT = obj({"output": STR}, required=("output",))

_ACTION = {"action": STR, "instance_uuid": STR, "request_id": STR, "user_id": STR, "project_id": STR,
           "start_time": NSTR, "finish_time": NSTR, "message": NSTR}  # fmt: skip
_EVENT = obj({"event": STR, "start_time": NSTR, "finish_time": NSTR, "result": NSTR, "host": STR, "details": NSTR,
              "traceback": NSTR})  # fmt: skip
INSTANCE_ACTIONS = obj({"instanceActions": arr(obj(_ACTION))}, required=("instanceActions",))
INSTANCE_ACTION = obj({"instanceAction": obj({**_ACTION, "events": arr(_EVENT)})}, required=("instanceAction",))

FLAVOR = obj(
    {
        "id": STR, "name": STR, "links": LINKS, "ram": INT, "vcpus": INT, "disk": INT,
        "OS-FLV-EXT-DATA:ephemeral": INT, "OS-FLV-DISABLED:disabled": BOOL, "swap": one(INT, {"const": ""}),
        "rxtx_factor": NUM, "os-flavor-access:is_public": BOOL,
    },
    required=("id", "name", "links"),
)  # fmt: skip
FLAVOR_ONE = obj({"flavor": FLAVOR}, required=("flavor",))
FLAVORS = obj({"flavors": arr(FLAVOR), "flavors_links": LINKS}, required=("flavors",))
EXTRA_SPECS = obj({"extra_specs": {"type": "object", "additionalProperties": STR}}, required=("extra_specs",))
EXTRA_SPEC = {"type": "object", "minProperties": 1, "maxProperties": 1, "additionalProperties": STR}

_KEYPAIR = {"name": STR, "public_key": STR, "fingerprint": STR}
KEYPAIR_CREATED = obj({"keypair": obj({**_KEYPAIR, "user_id": STR})}, required=("keypair",))
KEYPAIRS = obj({"keypairs": arr(obj({"keypair": obj(_KEYPAIR)}))}, required=("keypairs",))
KEYPAIR = obj(
    {"keypair": obj({**_KEYPAIR, "user_id": STR, "id": STR, "created_at": NSTR, "deleted": BOOL,
                     "deleted_at": NULL, "updated_at": NULL})},
    required=("keypair",),
)  # fmt: skip

_ABSOLUTE = {"type": "object", "additionalProperties": INT}
LIMITS = obj({"limits": obj({"rate": arr(OBJ), "absolute": _ABSOLUTE})}, required=("limits",))
QUOTA_SET = obj({"quota_set": obj({"id": STR, **dict.fromkeys(DEFAULT_QUOTAS, INT)})}, required=("quota_set",))
_QUOTA_DETAIL = obj({"limit": INT, "in_use": INT, "reserved": INT})
QUOTA_SET_DETAIL = obj(
    {"quota_set": obj({"id": STR, **dict.fromkeys(DEFAULT_QUOTAS, _QUOTA_DETAIL)})}, required=("quota_set",)
)

_ZONE = obj({"zoneName": STR, "zoneState": obj({"available": BOOL}), "hosts": nullable(OBJ)})
AVAILABILITY_ZONES = obj({"availabilityZoneInfo": arr(_ZONE)}, required=("availabilityZoneInfo",))

_NINT = nullable(INT)
HYPERVISOR = obj(
    {
        "id": STR, "hypervisor_hostname": STR, "state": STR, "status": STR, "hypervisor_type": STR,
        "hypervisor_version": INT, "host_ip": NULL, "vcpus": INT, "memory_mb": INT, "local_gb": INT,
        "vcpus_used": INT, "memory_mb_used": INT, "local_gb_used": INT, "free_ram_mb": INT, "free_disk_gb": INT,
        "disk_available_least": INT, "running_vms": INT, "current_workload": INT, "cpu_info": STR,
        "service": obj({"host": STR, "id": NSTR, "disabled_reason": NSTR}), "virt_type": STR,
        "availability_zone": STR, "cpu_allocation_ratio": NUM, "ram_allocation_ratio": NUM,
        "disk_allocation_ratio": NUM, "last_report_at": NSTR,
    },
    required=("id", "hypervisor_hostname", "state", "status"),
)  # fmt: skip
HYPERVISORS = obj({"hypervisors": arr(HYPERVISOR)}, required=("hypervisors",))
HYPERVISOR_ONE = obj({"hypervisor": HYPERVISOR}, required=("hypervisor",))
SERVICES = obj(
    {"services": arr(obj({
        "id": STR, "binary": STR, "host": STR, "zone": STR, "status": STR, "state": STR, "updated_at": NSTR,
        "disabled_reason": NSTR, "forced_down": BOOL, "broker_node": NSTR, "version": NSTR,
    }))},
    required=("services",),
)  # fmt: skip

AGGREGATE = obj(
    {
        "id": INT, "uuid": STR, "name": STR, "availability_zone": NSTR, "hosts": arr(STR),
        "metadata": {"type": "object", "additionalProperties": STR}, "created_at": NSTR, "updated_at": NSTR,
        "deleted": BOOL, "deleted_at": NULL,
    },
    required=("id", "name", "hosts", "metadata"),
)  # fmt: skip
AGGREGATE_ONE = obj({"aggregate": AGGREGATE}, required=("aggregate",))
AGGREGATES = obj({"aggregates": arr(AGGREGATE)}, required=("aggregates",))

SERVER_GROUP = obj(
    {
        "id": STR, "name": STR, "policies": arr(STR), "policy": STR,
        "rules": obj({"max_server_per_host": INT}), "members": arr(STR), "metadata": OBJ, "project_id": STR,
        "user_id": STR,
    },
    required=("id", "name", "policies", "members"),
)  # fmt: skip
SERVER_GROUP_ONE = obj({"server_group": SERVER_GROUP}, required=("server_group",))
SERVER_GROUPS = obj({"server_groups": arr(SERVER_GROUP)}, required=("server_groups",))

__all__ = [name for name, value in dict(globals()).items() if name.isupper() and isinstance(value, dict)]
