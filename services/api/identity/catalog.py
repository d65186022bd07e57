"""The service catalog and the version documents keystoneauth discovers endpoints with (pure functions)."""

from __future__ import annotations

import uuid
from typing import Any

from oslo_config import cfg

__all__ = ["IDENTITY_VERSION", "SERVICES", "build_catalog", "identity_version", "identity_versions"]

IDENTITY_VERSION = "v3.14"
_UPDATED = "2020-04-07T00:00:00Z"
_MEDIA = [{"base": "application/json", "type": "application/vnd.openstack.identity-v3+json"}]

# (type, name, path under the public endpoint). Image and network point at their unversioned roots, as
# devstack's catalog does: keystoneauth discovers the version from the list served there.
SERVICES = (
    ("identity", "keystone", "/identity/v3"),
    ("compute", "nova", "/compute/v2.1"),
    ("image", "glance", "/image"),
    ("network", "neutron", "/network"),
)
_NS = uuid.UUID("6c1bd0c4-5b53-4a8e-9d8a-2f8f1f4f2a10")


def _stable_id(*parts: str) -> str:
    """Catalog ids that every API node computes alike (the catalog lives in no table)."""
    return uuid.uuid5(_NS, "/".join(parts)).hex


def build_catalog(conf: cfg.ConfigOpts) -> list[dict[str, Any]]:
    base = conf.api.public_endpoint.rstrip("/")
    region = conf.api.region_name
    catalog = []
    for stype, name, path in SERVICES:
        endpoints = [
            {
                "id": _stable_id(stype, interface),
                "interface": interface,
                "region": region,
                "region_id": region,
                "url": base + path,
            }
            for interface in ("public", "internal", "admin")
        ]
        catalog.append({"id": _stable_id(stype), "type": stype, "name": name, "endpoints": endpoints})
    return catalog


def identity_version(base: str) -> dict[str, Any]:
    return {
        "id": IDENTITY_VERSION,
        "status": "stable",
        "updated": _UPDATED,
        "links": [{"rel": "self", "href": f"{base}/identity/v3/"}],
        "media-types": _MEDIA,
    }


def identity_versions(base: str) -> dict[str, Any]:
    return {"versions": {"values": [identity_version(base)]}}
