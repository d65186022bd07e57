"""Helpers the Network API handlers share: Neutron's error shape, list queries, views, attribute checks."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

from aiohttp import web

from common import exceptions
from common.context import RequestContext
from services.api.app import CONF, DB, Handler, ctx, paginate
from services.api.validation import json_body, validate

__all__ = [
    "PREFIX",
    "ListQuery",
    "body_of",
    "check_attributes",
    "default_sg_id",
    "list_response",
    "owner_or_admin",
    "parse_bool",
    "parse_int",
    "parse_list_query",
    "requested_project",
    "scope",
    "show_response",
    "text",
    "timestamp",
    "validate_member",
]

PREFIX = "/network/v2.0"
# Query parameters that shape a list rather than filter it.
_CONTROL = {"fields", "limit", "marker", "sort_key", "sort_dir", "page_reverse", "verbose"}
_TAG_FILTERS = {"tags", "tags-any", "not-tags", "not-tags-any"}
_SG_NAMESPACE = uuid.UUID("5e1b7c52-6a44-4b8e-9d0c-7f1e2a3b4c5d")


def scope(c: RequestContext) -> str | None:
    """The project whose resources a caller sees, or None for an admin (everything)."""
    return c.scope


def owner_or_admin(c: RequestContext, row: Mapping[str, Any], what: str) -> None:
    """``Forbidden`` unless the caller owns ``row`` or is an admin (seeing a shared network is not owning it)."""
    if not c.is_admin and row["project_id"] != c.project_id:
        raise exceptions.Forbidden(f"Policy doesn't allow this operation on {what}: it belongs to another project.")


def timestamp(dt: datetime | None) -> str | None:
    """Neutron's timestamp format: UTC, seconds, trailing Z."""
    return dt.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ") if dt is not None else None


def default_sg_id(project_id: str) -> str:
    """The id of a project's 'default' security group (derived, so every API node agrees without storage)."""
    return str(uuid.uuid5(_SG_NAMESPACE, f"default:{project_id}"))


def parse_bool(name: str, value: str) -> bool:
    v = value.strip().lower()
    if v in ("true", "1", "yes", "on"):
        return True
    if v in ("false", "0", "no", "off"):
        return False
    raise exceptions.BadRequest(f"Invalid input for {name}. Reason: '{value}' cannot be converted to boolean.")


def parse_int(name: str, value: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise exceptions.BadRequest(f"Invalid input for {name}. Reason: '{value}' is not an integer.") from None


class ListQuery:
    """A parsed list request: typed column filters, pagination, the fields to show, and whether it is void."""

    def __init__(self) -> None:
        self.filters: dict[str, list[Any]] = {}
        self.extra: dict[str, list[str]] = {}
        self.limit: int | None = None
        self.marker: str | None = None
        self.fields: list[str] = []
        self.empty = False  # a filter no resource can match (tags: Stratus keeps none yet)


FilterSpec = Mapping[str, tuple[str, Callable[[str, str], Any]]]


def text(name: str, value: str) -> str:
    """Filter converter for text columns."""
    return value


def parse_list_query(request: web.Request, spec: FilterSpec, extra: Iterable[str] = ()) -> ListQuery:
    """Map query parameters onto column filters through ``spec`` (param → (column, converter)).

    Repeated parameters are alternatives (``id=a&id=b``). Parameters named in ``extra`` are collected raw for the
    handler. Any other parameter is a 400 naming it, rather than a filter silently ignored.
    """
    lq = ListQuery()
    lq.limit, lq.marker = paginate(request.query)
    lq.fields = request.query.getall("fields", [])
    extra = set(extra)
    for name in set(request.query.keys()):
        values = request.query.getall(name)
        if name in _CONTROL:
            continue
        if name in _TAG_FILTERS:
            if name in ("tags", "tags-any") and any(values):
                lq.empty = True
            continue
        if name in extra:
            lq.extra[name] = values
            continue
        if name not in spec:
            raise exceptions.BadRequest(f"{name} is an invalid filter: it is not an attribute of this resource.")
        column, convert = spec[name]
        lq.filters.setdefault(column, []).extend(convert(name, v) for v in values)
    return lq


def list_response(
    request: web.Request, collection: str, items: Sequence[dict[str, Any]], lq: ListQuery
) -> web.Response:
    """``{collection: [...]}`` with ``fields`` applied and, when a page came back full, a ``next`` link."""
    links = []
    if lq.limit and items and len(items) >= lq.limit and items[-1].get("id") is not None:
        query = [(k, v) for k, v in request.query.items() if k != "marker"] + [("marker", items[-1]["id"])]
        base = request.app[CONF].api.public_endpoint.rstrip("/")
        links.append({"rel": "next", "href": f"{base}{request.path}?{urlencode(query)}"})
    if lq.fields:
        items = [{k: v for k, v in item.items() if k in lq.fields} for item in items]
    body: dict[str, Any] = {collection: list(items)}
    if links:
        body[f"{collection}_links"] = links
    return web.json_response(body)


def show_response(request: web.Request, member: str, item: dict[str, Any], status: int = 200) -> web.Response:
    fields = request.query.getall("fields", [])
    if fields:
        item = {k: v for k, v in item.items() if k in fields}
    return web.json_response({member: item}, status=status)


def check_attributes(body: Mapping[str, Any], known: Iterable[str], read_only: Iterable[str] = ()) -> None:
    """Neutron's answers for attributes it does not take: unknown ones, and read-only ones on update."""
    ro = sorted(k for k in body if k in set(read_only))
    if ro:
        raise exceptions.BadRequest(f"Cannot update read-only attribute {ro[0]}")
    unknown = sorted(k for k in body if k not in set(known))
    if unknown:
        raise exceptions.BadRequest(f"Unrecognized attribute(s) '{', '.join(unknown)}'")


async def body_of(request: web.Request, member: str) -> dict[str, Any]:
    """The ``{member: {...}}`` object of a create or update request, as its route validated it (the attributes'
    values; the caller then refuses unknown and read-only attributes with ``check_attributes``)."""
    raw = await json_body(request)
    if not isinstance(raw, dict) or not isinstance(raw.get(member), dict) or set(raw) != {member}:
        raise exceptions.BadRequest(f"Resource body required: expected an object {{'{member}': {{...}}}}.")
    return raw[member]


def validate_member(member: str, body: Mapping[str, Any], properties: dict[str, Any]) -> None:
    """JSON-Schema check of a member's attributes; the 400 names the field (``network/mtu``). The routes already
    validate request bodies against the same ``properties``; this serves the checks callable on their own
    (``networks.validated_values``, ``subnets.create_plan``, ``security_groups.validated_rule``)."""
    validate({"type": "object", "properties": {member: {"type": "object", "properties": properties}}}, {member: body})


def requested_project(c: RequestContext, body: Mapping[str, Any]) -> str:
    """The project a new resource belongs to: ``project_id``/``tenant_id`` (admins only, for other projects) or
    the caller's."""
    pid, tid = body.get("project_id"), body.get("tenant_id")
    if pid is not None and tid is not None and pid != tid:
        raise exceptions.BadRequest("project_id and tenant_id do not match.")
    wanted = pid or tid
    if wanted is None:
        return c.project
    if wanted != c.project_id and not c.is_admin:
        raise exceptions.Forbidden("Policy doesn't allow creating resources for another project.")
    return wanted


def delete_handler(key: str, kind: str, visible: Callable[..., Any], delete: Callable[..., Any]) -> Handler:
    """DELETE of one resource: 404 unless visible (``visible(conn, ctx, id)``), 403 unless owner or admin, then
    ``delete(conn, id)`` (which raises its own 409 when the resource is in use); 204."""

    async def handler(request: web.Request) -> web.Response:
        c = ctx(request)

        async def txn(conn: Any) -> None:
            row = await visible(conn, c, request.match_info[key])
            owner_or_admin(c, row, f"{kind} {row['id']}")
            await delete(conn, row["id"])

        await request.app[DB].run(txn)
        return web.Response(status=204)

    return handler
