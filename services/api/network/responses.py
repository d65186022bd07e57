"""Schemas of the Network API's route table: list queries built from each resource's filters, request bodies
built from each resource's attributes, and the shapes of Neutron's answers as the views build them.

Neutron's ``fields`` query parameter may leave any attribute out, so no resource attribute is ``required``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from services.api.network.common import parse_bool, parse_int, text
from services.api.routes import Param
from services.api.shapes import BOOL, INT, LIMIT, LINKS, MARKER, NULL, OBJ, STR, TEXT, arr, int4, nullable, obj
from services.api.shapes import text as string

__all__ = [
    "NEUTRON_ERROR",
    "NETWORK",
    "PORT",
    "RULE",
    "SECURITY_GROUP",
    "SHOW_QUERY",
    "SUBNET",
    "collection",
    "list_query",
    "member",
    "member_body",
    "repeated",
]

NEUTRON_ERROR = obj(
    {"NeutronError": obj({"type": STR, "message": STR, "detail": STR}, required=("type", "message", "detail"))},
    required=("NeutronError",),
)

# ----- requests -----------------------------------------------------------------------------------------------

SHOW_QUERY = {"fields": Param(TEXT, "Only these attributes (repeatable)", repeat=True)}
_CONTROL = {
    **SHOW_QUERY,
    "limit": LIMIT,
    "marker": MARKER,
    "sort_key": Param(string(64), repeat=True),
    "sort_dir": Param(string(8), repeat=True),
    "page_reverse": Param(string(8)),
    "verbose": Param(string(8)),
    **{t: Param(TEXT, "Stratus keeps no tags: a non-empty tags filter matches nothing", repeat=True)
       for t in ("tags", "tags-any", "not-tags", "not-tags-any")},
}  # fmt: skip


def _filter_schema(convert: Any) -> dict[str, Any]:
    if convert is parse_int:
        return int4(-(2**31))
    if convert is parse_bool:
        return string(8)
    if convert is text:
        return TEXT
    return string(64)  # addresses and the like


def list_query(filters: Mapping[str, tuple[str, Any]], extra: Mapping[str, Param] | None = None) -> dict[str, Param]:
    """The query parameters of a list: paging and ``fields``, then each filter (repeatable: values are
    alternatives) with the schema its converter's column needs."""
    out = dict(_CONTROL)
    out.update({name: Param(_filter_schema(convert), f"Filter on {name}", repeat=True)
                for name, (_, convert) in filters.items()})  # fmt: skip
    out.update(extra or {})
    return out


def repeated(names: Iterable[str]) -> dict[str, Param]:
    return {n: Param(TEXT, f"Filter on {n}", repeat=True) for n in names}


def member_body(member: str, properties: dict[str, Any]) -> dict[str, Any]:
    """``{member: {...}}`` with the resource's attributes (the handler refuses unknown and read-only ones with
    Neutron's messages, so the schema does not)."""
    return obj({member: {"type": "object", "properties": properties}}, required=(member,))


# ----- responses ----------------------------------------------------------------------------------------------

NSTR = nullable(STR)
VERSIONS = obj({"versions": arr(obj({"id": STR, "status": STR, "links": LINKS}))}, required=("versions",))
RESOURCES = obj({"resources": arr(obj({"name": STR, "collection": STR, "links": LINKS}))}, required=("resources",))

_STANDARD = {"tags": arr(STR), "created_at": NSTR, "updated_at": NSTR, "revision_number": INT}
NETWORK = obj({
    "id": STR, "name": STR, "description": STR, "tenant_id": STR, "project_id": STR, "admin_state_up": BOOL,
    "status": STR, "shared": BOOL, "router:external": BOOL, "mtu": INT, "subnets": arr(STR), "dns_domain": STR,
    "port_security_enabled": BOOL, "availability_zone_hints": arr(STR), "availability_zones": arr(STR),
    "ipv4_address_scope": NULL, "ipv6_address_scope": NULL, "l2_adjacency": BOOL, "qos_policy_id": NULL,
    **_STANDARD,
})  # fmt: skip
SUBNET = obj({
    "id": STR, "name": STR, "description": STR, "tenant_id": STR, "project_id": STR, "network_id": STR,
    "ip_version": INT, "cidr": STR, "gateway_ip": NSTR, "enable_dhcp": BOOL,
    "allocation_pools": arr(obj({"start": STR, "end": STR})), "dns_nameservers": arr(STR),
    "host_routes": arr(obj({"destination": STR, "nexthop": STR})), "subnetpool_id": NULL, "ipv6_ra_mode": NULL,
    "ipv6_address_mode": NULL, "segment_id": NULL, "service_types": arr(STR), "dns_publish_fixed_ip": BOOL,
    **_STANDARD,
})  # fmt: skip
PORT = obj({
    "id": STR, "name": STR, "description": STR, "network_id": STR, "tenant_id": STR, "project_id": STR,
    "mac_address": STR, "admin_state_up": BOOL, "status": STR, "device_id": STR, "device_owner": STR,
    "fixed_ips": arr(obj({"subnet_id": STR, "ip_address": STR})), "dns_name": STR, "security_groups": arr(STR),
    "port_security_enabled": BOOL, "allowed_address_pairs": arr(OBJ), "extra_dhcp_opts": arr(OBJ),
    "ip_allocation": STR, "qos_policy_id": NULL,
    "binding:host_id": STR, "binding:vif_type": STR, "binding:vif_details": OBJ, "binding:vnic_type": STR,
    "binding:profile": OBJ,
    **_STANDARD,
})  # fmt: skip
RULE = obj({
    "id": STR, "security_group_id": STR, "direction": STR, "ethertype": STR, "protocol": NSTR,
    "port_range_min": nullable(INT), "port_range_max": nullable(INT), "remote_ip_prefix": NSTR,
    "remote_group_id": NSTR, "remote_address_group_id": NULL, "normalized_cidr": NSTR, "description": STR,
    "tenant_id": STR, "project_id": STR, "belongs_to_default_sg": BOOL,
    "created_at": NSTR, "updated_at": NSTR, "revision_number": INT,
})  # fmt: skip
SECURITY_GROUP = obj({
    "id": STR, "name": STR, "description": STR, "tenant_id": STR, "project_id": STR, "stateful": BOOL,
    "shared": BOOL, "security_group_rules": arr(RULE), **_STANDARD,
})  # fmt: skip
EXTENSION = obj({"alias": STR, "name": STR, "description": STR, "updated": STR, "links": arr(OBJ)})
QUOTA = obj({"quota": {"type": "object", "additionalProperties": INT}}, required=("quota",))
QUOTA_DETAILS = obj(
    {"quota": {"type": "object", "additionalProperties": obj({"limit": INT, "used": INT, "reserved": INT})}},
    required=("quota",),
)


def collection(key: str, item: dict[str, Any]) -> dict[str, Any]:
    return obj({key: arr(item), f"{key}_links": LINKS}, required=(key,))


def member(key: str, item: dict[str, Any]) -> dict[str, Any]:
    return obj({key: item}, required=(key,))
