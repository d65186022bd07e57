"""Glance v2 image shape: core attributes plus the image's properties flattened at the top level."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

__all__ = ["CORE", "READ_ONLY", "image_view", "isotime"]

# Attributes a client may set (on create, or by PATCH).
CORE = frozenset(
    {"name", "visibility", "protected", "disk_format", "container_format", "min_disk", "min_ram", "tags", "os_hidden"}
)
# Attributes only the service sets; a request that tries is refused (403, as Glance).
READ_ONLY = frozenset(
    {
        "id", "status", "size", "virtual_size", "checksum", "os_hash_algo", "os_hash_value", "owner", "created_at",
        "updated_at", "self", "file", "schema", "direct_url", "locations", "location",
    }
)  # fmt: skip


def isotime(dt: datetime | None) -> str | None:
    return dt.strftime("%Y-%m-%dT%H:%M:%SZ") if dt is not None else None


def image_view(row: Mapping[str, Any], *, is_admin: bool = False) -> dict[str, Any]:
    view: dict[str, Any] = dict(row["properties"] or {})
    view.update(
        {
            "id": row["id"],
            "name": row["name"],
            "status": row["status"],
            "visibility": row["visibility"],
            "protected": row["protected"],
            "os_hidden": False,
            "checksum": row["checksum"],
            "os_hash_algo": row["os_hash_algo"],
            "os_hash_value": row["os_hash_value"],
            "owner": row["project_id"],
            "size": row["size"],
            "virtual_size": row["virtual_size"],
            "min_ram": row["min_ram"],
            "min_disk": row["min_disk"],
            "disk_format": row["disk_format"],
            "container_format": row["container_format"],
            "created_at": isotime(row["created_at"]),
            "updated_at": isotime(row["updated_at"]),
            "tags": list(row["tags"] or []),
            "self": f"/v2/images/{row['id']}",
            "file": f"/v2/images/{row['id']}/file",
            "schema": "/v2/schemas/image",
        }
    )
    if is_admin and row["location"]:
        view["direct_url"] = row["location"]
    return view
