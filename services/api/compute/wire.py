"""The instance as it travels to computes over RPC: the row as JSON plus what its request spec carried."""

from __future__ import annotations

import decimal
import ipaddress
import uuid
from collections.abc import Mapping
from datetime import date, datetime
from typing import Any

__all__ = ["instance_to_wire", "jsonable"]


def jsonable(value: Any) -> Any:
    """A database value as JSON: ISO times, uuid and address strings, floats for numerics."""
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, uuid.UUID | ipaddress.IPv4Address | ipaddress.IPv6Address):
        return str(value)
    if isinstance(value, decimal.Decimal):
        return float(value)
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    return value


def instance_to_wire(row: Mapping[str, Any]) -> dict[str, Any]:
    """The ``instance`` dict of compute RPC methods (see docs/internals.md).

    Every column of the ``instances`` row, JSON-able, plus ``networks`` (the requested networks, as the request
    spec has them). ``flavor`` and ``image`` are the snapshots taken at boot and are already columns.
    """
    wire = {str(k): jsonable(v) for k, v in dict(row).items()}
    wire["networks"] = wire.get("requested_networks") or []
    return wire
