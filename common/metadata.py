"""The OpenStack and EC2 metadata documents of one instance, as pure functions.

Two services serve them: the network node's metadata server (``services/network/metadata.py``, over HTTP, from
the database) and the compute's config drive (``services/compute/virt/configdrive.py``, on an ISO 9660 volume, from
the build message). Both describe the instance with the same dict, so a guest sees the same documents either way:

- the ``instances`` row (or the wire instance: ``id``, ``name``, ``hostname``, ``project_id``, ``key_name``,
  ``key_data``, ``user_data`` (base64), ``metadata``, ``availability_zone``, ``launch_index``, ``image_id``,
  ``flavor``, ``reservation_id``),
- ``dns_name``: the label of its name in DNS (falls back to ``hostname``),
- ``ports``: one entry per address, ``{"id", "mac_address", "network_id", "mtu", "ip", "cidr", "gateway_ip"}``,
- ``address`` and ``mac_address``: the address (and its port's MAC) the EC2 layout calls local.
"""

from __future__ import annotations

import base64
import ipaddress
import json
from collections.abc import Iterable, Mapping
from typing import Any

__all__ = ["ec2_metadata", "instance_documents", "ports_from_allocation"]


def instance_documents(inst: Mapping[str, Any], dns_domain: str) -> dict[str, Any]:
    """The OpenStack documents for one instance: ``meta_data``, ``network_data``, ``user_data`` (bytes or None)."""
    label = inst.get("dns_name") or inst["hostname"]
    fqdn = f"{label}.{dns_domain}"
    keys = {inst["key_name"]: inst["key_data"]} if inst.get("key_name") and inst.get("key_data") else {}
    meta = {
        "uuid": inst["id"],
        "name": inst.get("name") or "",
        "hostname": fqdn,
        "availability_zone": inst.get("availability_zone") or "nova",
        "project_id": inst["project_id"],
        "launch_index": inst.get("launch_index") or 0,
        "meta": _json(inst.get("metadata")),
        "public_keys": keys,
        "keys": [{"name": k, "type": "ssh", "data": v} for k, v in keys.items()],
        "devices": [],
    }
    links, nets = [], []
    for i, p in enumerate(inst["ports"]):
        net = ipaddress.ip_network(str(p["cidr"]))
        links.append({"id": f"tap{p['id'][:11]}", "type": "bridge", "ethernet_mac_address": str(p["mac_address"]),
                      "mtu": p["mtu"], "vif_id": p["id"]})  # fmt: skip
        routes = []
        if p["gateway_ip"] is not None:
            routes.append({"network": "0.0.0.0", "netmask": "0.0.0.0", "gateway": str(p["gateway_ip"]).split("/")[0]})
        nets.append({"id": f"network{i}", "type": "ipv4_dhcp", "link": links[-1]["id"], "ip_address": p["ip"],
                     "netmask": str(net.netmask), "routes": routes, "network_id": p["network_id"]})  # fmt: skip
    user_data = None
    if inst.get("user_data"):
        try:
            user_data = base64.b64decode(inst["user_data"], validate=True)
        except ValueError:
            user_data = inst["user_data"].encode()
    return {
        "meta_data": meta,
        "network_data": {"links": links, "networks": nets, "services": []},
        "user_data": user_data,
    }


def ec2_metadata(inst: Mapping[str, Any], docs: Mapping[str, Any]) -> dict[str, Any]:
    """The EC2 ``meta-data`` tree; a key ``"0=name"`` is listed as ``0=name`` and walked as ``0``."""
    meta = docs["meta_data"]
    tree: dict[str, Any] = {
        "ami-id": inst.get("image_id") or "",
        "ami-launch-index": str(meta["launch_index"]),
        "hostname": meta["hostname"],
        "local-hostname": meta["hostname"],
        "instance-id": inst["id"],
        "instance-type": (_json(inst.get("flavor")) or {}).get("name", ""),
        "local-ipv4": inst.get("address") or "",
        "mac": str(inst.get("mac_address") or ""),
        "placement": {"availability-zone": meta["availability_zone"]},
        "reservation-id": inst.get("reservation_id") or "",
        "security-groups": "default",
    }
    if meta["public_keys"]:
        name, key = next(iter(meta["public_keys"].items()))
        tree["public-keys"] = {f"0={name}": {"openssh-key": key}}
    return tree


def ports_from_allocation(ports: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The ``ports`` entries of the instance dict from its port dicts (``request_spec["ports"]``; one per address,
    addresses outside the subnet the port dict describes left out: their prefix is not known here)."""
    out = []
    for p in ports:
        if not p.get("cidr"):
            continue
        subnet = ipaddress.ip_network(str(p["cidr"]))
        for f in p.get("fixed_ips") or []:
            if ipaddress.ip_address(f["ip_address"]) in subnet:
                out.append({"id": p["id"], "mac_address": p["mac_address"], "network_id": p["network_id"],
                            "mtu": p.get("mtu"), "ip": f["ip_address"], "cidr": p["cidr"],
                            "gateway_ip": p.get("gateway_ip")})  # fmt: skip
    return out


def _json(value: Any) -> Any:
    return (json.loads(value) if isinstance(value, str) else value) or {}
