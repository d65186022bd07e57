"""Wire shapes built from database rows: what the API casts and what computes receive (docs/internals.md)."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import datetime
from typing import Any

__all__ = ["instance_to_wire", "request_spec_from_instance"]


def _jsonable(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, uuid.UUID):
        return str(value)
    return value


def instance_to_wire(row: Mapping[str, Any]) -> dict[str, Any]:
    """The instance row as JSON-able dict (flavor, image and requested networks included)."""
    return {k: _jsonable(v) for k, v in dict(row).items()}


def request_spec_from_instance(
    row: Mapping[str, Any], ports: list[dict[str, Any]], min_count: int | None = None
) -> dict[str, Any]:
    """What the scheduler needs to place ``row`` and the compute to build it (docs/internals.md), for its first
    attempt (the API) or the next one (a reschedule): ``ports`` are its port dicts (``networks.instance_ports``),
    failed attempts so far exclude their hosts; ``min_count`` for a multi-create batch, all of whose specs
    carry it (the scheduler builds none of them unless that many can be placed)."""
    failures = list(row.get("build_failures") or [])
    spec = {
        "instance_id": row["id"],
        "project_id": row["project_id"],
        "user_id": row.get("user_id"),
        "flavor": row["flavor"],
        "image": row["image"],
        "networks": row["requested_networks"],
        "ports": ports,
        "availability_zone": row.get("availability_zone"),
        "scheduler_hints": row.get("scheduler_hints") or {},
        "attempt": int(row.get("attempt") or 0) + 1,
        "excluded_hosts": sorted({f["host"] for f in failures if f.get("host")}),
        "failures": failures,
    }
    if min_count is not None:
        spec["min_count"] = min_count
    return spec
