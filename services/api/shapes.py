"""Building blocks of the route table's schemas: parameter schemas with the limits of the columns they reach, and
short constructors for response shapes.

Limits come from the columns (common/db/migrations): ``integer`` is int4, ``bigint`` int8, ``real`` float4; text
has no length limit in PostgreSQL, so every string gets a ``maxLength`` that bounds what is stored and echoed.
Response shapes list each member with its type; none forbids additional members (``additionalProperties``).
"""

from __future__ import annotations

from typing import Any

from services.api.routes import Param

__all__ = [
    "BOOL",
    "FLOAT4_MAX",
    "ID",
    "INT",
    "INT4_MAX",
    "INT8_MAX",
    "LIMIT",
    "LINKS",
    "MARKER",
    "NULL",
    "NUM",
    "OBJ",
    "STR",
    "TEXT",
    "arr",
    "int4",
    "nullable",
    "obj",
    "one",
    "text",
]

INT4_MAX = 2**31 - 1
INT8_MAX = 2**63 - 1
FLOAT4_MAX = 3.4028234e38  # the largest finite ``real``, rounded down

# ----- request values ------------------------------------------------------------------------------------------

ID = {"type": "string", "minLength": 1, "maxLength": 255}  # a resource id or name in a path or query
TEXT = {"type": "string", "maxLength": 255}


def text(max_length: int = 255, **extra: Any) -> dict[str, Any]:
    return {"type": "string", "maxLength": max_length, **extra}


def int4(minimum: int = 0, maximum: int = INT4_MAX) -> dict[str, Any]:
    """An integer an ``integer`` column (or an int4 query argument) can hold, within [minimum, maximum]."""
    return {"type": "integer", "minimum": minimum, "maximum": maximum}


LIMIT = Param(int4(), "The longest page to return")
MARKER = Param(ID, "The id of the last item of the previous page")

# ----- response shapes -----------------------------------------------------------------------------------------

STR = {"type": "string"}
INT = {"type": "integer"}
NUM = {"type": "number"}
BOOL = {"type": "boolean"}
NULL = {"type": "null"}
OBJ = {"type": "object"}


def nullable(schema: dict[str, Any]) -> dict[str, Any]:
    t = schema["type"]
    return {**schema, "type": [*(t if isinstance(t, list) else [t]), "null"]}


def obj(properties: dict[str, Any] | None = None, *, required: tuple[str, ...] | list[str] = ()) -> dict[str, Any]:
    """An object with these members (each typed); ``required`` lists those always present."""
    out: dict[str, Any] = {"type": "object", "properties": properties or {}}
    if required:
        out["required"] = list(required)
    return out


def arr(items: dict[str, Any]) -> dict[str, Any]:
    return {"type": "array", "items": items}


def one(*schemas: dict[str, Any]) -> dict[str, Any]:
    return {"anyOf": list(schemas)}


LINKS = arr(obj({"rel": STR, "href": STR, "type": STR}, required=("rel", "href")))
