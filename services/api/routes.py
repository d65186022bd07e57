"""The declared route table: every route of the API, from which the aiohttp routes are registered, requests are
validated before their handler runs, errors take their API's shape, and the OpenAPI document is generated.

A ``Route`` names its method, path (an OpenAPI path template), handler, a JSON Schema per path and query parameter,
the body schema and a schema per response status. ``register`` compiles each route's schemas once, at startup, and
wraps its handler (``functools.wraps``, so markers such as ``@public`` carry through) in an endpoint that, in order:
refuses a non-admin on an admin-only route, checks path parameters, then the query string (integers are typed
first, so ``minimum``/``maximum`` apply), then parses and validates the body against the very schema the route
declares (``validation.json_body`` then hands the handler that body). Every string of a path or query string is
refused with the parameter named if it holds a NUL; every body is parsed by ``validation.parse_body``.

An ``Api`` (compute, identity, image, network, and the root documents) gives its routes their error shape
(``Api.error_body``, also used by the middleware for authentication errors and unknown paths under its prefix),
whether unknown query parameters are refused, and a wrapper such as Compute's microversion negotiation.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from common import exceptions
from services.api.validation import BODY, Checker, bad_text, parse_body

__all__ = [
    "API_KEY",
    "ROUTES_KEY",
    "Api",
    "Param",
    "PayloadTooLarge",
    "QUERY",
    "Route",
    "api_for_path",
    "error_body",
    "openapi_document",
    "register",
    "route_of",
]

QUERY = web.RequestKey("stratus_query", dict)  # the declared query parameters, typed: {name: value or [values]}
API_KEY = "stratus_api"  # handler attribute of a registered endpoint: its ``Api``
ROUTE_KEY = "stratus_route"  # handler attribute of a registered endpoint: its ``Route``
ROUTES_KEY = web.AppKey("stratus_routes", list)  # [(Api, Route)] in registration order

_PARAM = re.compile(r"{([^}:]+)}")
_INT = re.compile(r"^-?[0-9]{1,20}$")
_SUCCESS_TEXT = {200: "OK", 201: "Created", 202: "Accepted", 204: "No content", 300: "Multiple choices", 302: "Found"}
_ERROR_TEXT = {
    400: "Bad request: the message names the field, parameter or header and the limit it broke",
    401: "No token, or a token that is forged, malformed or expired",
    403: "The token's roles or project do not allow this",
    404: "No such resource (or not one the caller may see)",
    406: "The requested microversion is not served",
    409: "The request conflicts with the resource's state",
    413: "The request body is too large",
    501: "Not implemented by Stratus",
    503: "A service this request needs (database, broker, compute host) is unavailable; retry later",
}


class PayloadTooLarge(exceptions.StratusError):
    code = 413
    title = "overLimit"


@dataclass(frozen=True)
class Param:
    """A query (or header) parameter: its schema (integers are typed before it applies), whether it may be given
    several times (each value is checked), and what it does."""

    schema: dict[str, Any]
    description: str = ""
    repeat: bool = False
    required: bool = False


@dataclass(frozen=True)
class Api:
    """What the routes of one API share.

    ``error_body`` renders an error as this API renders errors; ``error_schema`` describes that body.
    ``strict_query`` refuses query parameters a route does not declare (``unknown_query`` says so: it takes the
    name), else they are ignored. ``wrap`` wraps every endpoint (outermost). ``headers`` are request headers every
    route of the API reads (documented, not validated here). ``errors``: statuses any route of the API may answer.
    """

    name: str
    prefix: str
    title: str
    error_body: Callable[[exceptions.StratusError], dict[str, Any]]
    error_schema: dict[str, Any]
    strict_query: bool = False
    unknown_query: str = "{name} is not a query parameter of this request."
    wrap: Callable[[Any], Any] | None = None
    headers: Mapping[str, Param] = field(default_factory=dict)
    errors: tuple[int, ...] = (400, 401, 403, 404, 409, 503)


@dataclass(frozen=True)
class Route:
    """One operation. ``path`` is an OpenAPI path template (``/compute/v2.1/servers/{server_id}``); ``patterns``
    narrows a path parameter for the router (an aiohttp regex). ``responses`` maps each success status to the
    JSON Schema of its body (None: no body). ``body``: the JSON Schema of the request body (None: none is read);
    ``raw_body`` names the media type of a body the handler streams itself. ``strict_query`` overrides the API's.
    ``headers``: request headers the handler reads (documented; the handler checks them). ``media``: the media
    type of a success status whose body is not JSON. ``errors``: statuses beyond the API's."""

    method: str
    path: str
    handler: Any
    summary: str
    responses: Mapping[int, dict[str, Any] | None]
    path_params: Mapping[str, dict[str, Any]] = field(default_factory=dict)
    query: Mapping[str, Param] = field(default_factory=dict)
    body: dict[str, Any] | None = None
    body_media_type: str = "application/json"
    raw_body: str | None = None
    headers: Mapping[str, Param] = field(default_factory=dict)
    media: Mapping[int, str] = field(default_factory=dict)
    admin_only: bool = False
    strict_query: bool | None = None
    errors: tuple[int, ...] = ()
    patterns: Mapping[str, str] = field(default_factory=dict)

    @property
    def public(self) -> bool:
        """Reachable without a token: the handler carries ``@public`` (``services.api.app.public``)."""
        return bool(getattr(self.handler, "__stratus_public__", False))

    @property
    def unscoped_ok(self) -> bool:
        """An unscoped token may call it: the handler carries ``@unscoped_ok`` (``services.api.app``)."""
        return bool(getattr(self.handler, "__stratus_unscoped__", False))

    def router_path(self) -> str:
        """The path as the router takes it: ``{name:regex}`` for each parameter with a pattern."""

        def param(m: re.Match[str]) -> str:
            return f"{{{m[1]}:{self.patterns[m[1]]}}}" if m[1] in self.patterns else m[0]

        return _PARAM.sub(param, self.path)


# ----- error shapes -------------------------------------------------------------------------------------------


def error_body(e: exceptions.StratusError) -> dict[str, Any]:
    """Nova's (and Glance's here) shape: ``{"badRequest": {"code": 400, "message": "..."}}``."""
    return {e.title: {"code": e.code, "message": e.message}}


_API_BY_PREFIX: list[Api] = []


def api_for_path(path: str) -> Api | None:
    """The API whose prefix ``path`` is under (for errors of paths no route matched)."""
    for api in _API_BY_PREFIX:
        if path == api.prefix or path.startswith(api.prefix + "/"):
            return api
    return None


def route_of(request: web.Request) -> tuple[Api | None, Route | None]:
    """The API and route of the request's matched handler (None, None for an unmatched path)."""
    handler = request.match_info.handler
    target = getattr(handler, "__func__", handler)
    return getattr(target, API_KEY, None), getattr(target, ROUTE_KEY, None)


# ----- the endpoint around each handler -----------------------------------------------------------------------


def _is_integer(schema: Mapping[str, Any]) -> bool:
    t = schema.get("type")
    return t == "integer" or (isinstance(t, list) and "integer" in t)


class _Compiled:
    """A route's checkers, built once at registration."""

    def __init__(self, api: Api, route: Route) -> None:
        names = _PARAM.findall(route.path)
        missing = set(names) - set(route.path_params)
        if missing:
            raise ValueError(f"route {route.method} {route.path}: no schema for path parameter(s) {sorted(missing)}")
        self.path = [(n, Checker(route.path_params[n])) for n in names]
        self.query = {n: (p, Checker(p.schema), _is_integer(p.schema)) for n, p in route.query.items()}
        self.required = [n for n, p in route.query.items() if p.required]
        self.headers = [(n, Checker(p.schema)) for n, p in {**api.headers, **route.headers}.items()]
        self.strict = api.strict_query if route.strict_query is None else route.strict_query
        self.unknown = api.unknown_query
        self.body = Checker(route.body) if route.body is not None else None


def _check_path(compiled: _Compiled, request: web.Request) -> None:
    info = request.match_info
    for name, checker in compiled.path:
        value = info[name]
        problem = bad_text(value)
        if problem is not None:
            raise exceptions.BadRequest(f"Invalid input for path parameter {name}: {problem}")
        checker.check(value, what="path parameter", root=name)


def _check_query(compiled: _Compiled, request: web.Request) -> dict[str, Any]:
    query = request.query
    typed: dict[str, Any] = {}
    for name in dict.fromkeys(query.keys()):
        problem = bad_text(name)
        values = query.getall(name)
        for value in values:
            problem = problem or bad_text(value)
        if problem is not None:
            raise exceptions.BadRequest(f"Invalid input for query parameter {shorten_name(name)}: {problem}")
        spec = compiled.query.get(name)
        if spec is None:
            if compiled.strict:
                raise exceptions.BadRequest(compiled.unknown.format(name=shorten_name(name)))
            continue
        param, checker, integer = spec
        out = []
        for value in values:
            v: Any = int(value) if integer and _INT.match(value) else value
            checker.check(v, what="query parameter", root=name)
            out.append(v)
        typed[name] = out if param.repeat else out[0]
    for name in compiled.required:
        if name not in typed:
            raise exceptions.BadRequest(f"The query parameter {name} is required.")
    return typed


def shorten_name(name: str) -> str:
    return name if len(name) <= 64 else name[:64] + "..."


async def _read(request: web.Request) -> bytes:
    try:
        return await request.read()
    except web.HTTPRequestEntityTooLarge as e:
        raise PayloadTooLarge(f"The request body is larger than the limit of {request.client_max_size} bytes.") from e


def _endpoint(api: Api, route: Route) -> Any:
    compiled = _Compiled(api, route)
    handler = route.handler

    @functools.wraps(handler)
    async def endpoint(request: web.Request) -> web.StreamResponse:
        if route.admin_only and not request["ctx"].is_admin:
            raise exceptions.Forbidden("Policy doesn't allow this operation: it needs the admin role.")
        _check_path(compiled, request)
        request[QUERY] = _check_query(compiled, request)
        for name, checker in compiled.headers:
            value = request.headers.get(name)
            if value is not None:
                checker.check(value, what="header", root=name)
        if compiled.body is not None:
            body = parse_body(await _read(request))
            compiled.body.check(body)
            request[BODY] = body
        return await handler(request)

    wrapped = api.wrap(endpoint) if api.wrap is not None else endpoint
    setattr(wrapped, API_KEY, api)
    setattr(wrapped, ROUTE_KEY, route)
    return wrapped


def register(app: web.Application, api: Api, routes: Iterable[Route]) -> None:
    """Add ``routes`` to ``app``'s router (each wrapped by its endpoint) and to its table (``ROUTES_KEY``)."""
    if api not in _API_BY_PREFIX:
        _API_BY_PREFIX.append(api)
        _API_BY_PREFIX.sort(key=lambda a: -len(a.prefix))
    table = app.setdefault(ROUTES_KEY, [])  # type: ignore[arg-type]
    for route in routes:
        app.router.add_route(route.method, route.router_path(), _endpoint(api, route))
        table.append((api, route))


# ----- the OpenAPI document -----------------------------------------------------------------------------------


def _operation_id(route: Route) -> str:
    tail = re.sub(r"[^A-Za-z0-9]+", "_", route.path).strip("_") or "root"
    return f"{route.method.lower()}_{tail}" + ("_slash" if route.path.endswith("/") and route.path != "/" else "")


def _parameters(api: Api, route: Route) -> list[dict[str, Any]]:
    params: list[dict[str, Any]] = []
    for name in _PARAM.findall(route.path):
        schema = dict(route.path_params[name])
        if name in route.patterns and "pattern" not in schema:
            schema["pattern"] = f"^(?:{route.patterns[name]})$"
        params.append({"name": name, "in": "path", "required": True, "schema": schema})
    for name, p in route.query.items():
        entry: dict[str, Any] = {"name": name, "in": "query", "required": p.required}
        if p.repeat:
            entry.update(schema={"type": "array", "items": p.schema}, style="form", explode=True)
        else:
            entry["schema"] = p.schema
        if p.description:
            entry["description"] = p.description
        params.append(entry)
    for name, p in {**api.headers, **route.headers}.items():
        params.append({"name": name, "in": "header", "required": False, "schema": p.schema,
                       "description": p.description})  # fmt: skip
    return params


def _responses(api: Api, route: Route) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for status, schema in sorted(route.responses.items()):
        entry: dict[str, Any] = {"description": _SUCCESS_TEXT.get(status, "Success")}
        if schema is not None:
            entry["content"] = {route.media.get(status, "application/json"): {"schema": schema}}
        out[str(status)] = entry
    errors = set(api.errors) | set(route.errors)
    if route.public:
        errors.discard(401)
    if route.body is not None or route.raw_body is not None:
        errors.add(413)
    for status in sorted(errors - set(route.responses)):
        out[str(status)] = {
            "description": _ERROR_TEXT.get(status, "Error"),
            "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{api.name}_error"}}},
        }
    if "400" in out:  # before any route: aiohttp's HTTP parser refuses a request line or header over 8190 bytes
        out["400"]["content"]["text/plain"] = {"schema": {"type": "string"}}
        out["400"]["description"] += "; text/plain when the HTTP parser refuses a line longer than 8190 bytes"
    return out


def openapi_document(routes: Sequence[tuple[Api, Route]], server_url: str, version: str) -> dict[str, Any]:
    """The OpenAPI 3.1 description of ``routes`` (every route the app registered), with ``server_url`` as the
    one server. Generated from the same ``Route`` objects the endpoints validate with: one source."""
    paths: dict[str, dict[str, Any]] = {}
    apis: dict[str, Api] = {}
    for api, route in routes:
        apis[api.name] = api
        op: dict[str, Any] = {
            "operationId": _operation_id(route),
            "summary": route.summary,
            "tags": [api.name],
            "parameters": _parameters(api, route),
            "responses": _responses(api, route),
        }
        if route.handler.__doc__:
            op["description"] = route.handler.__doc__.strip()
        if route.public:
            op["security"] = []
            op["x-stratus-public"] = True
        if route.admin_only:
            op["x-stratus-admin-only"] = True
        if route.unscoped_ok:
            op["x-stratus-unscoped"] = True
        if route.body is not None:
            op["requestBody"] = {"required": True, "content": {route.body_media_type: {"schema": route.body}}}
        elif route.raw_body is not None:
            binary = {"type": "string", "format": "binary"}
            op["requestBody"] = {"required": True, "content": {route.raw_body: {"schema": binary}}}
        paths.setdefault(route.path, {})[route.method.lower()] = op
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Stratus API",
            "version": version,
            "description": "Identity v3, Compute v2.1, Image v2 and Network v2.0 (OpenStack-compatible subsets). "
            "Generated from the route table the API validates requests with (docs/api.md).",
        },
        "servers": [{"url": server_url}],
        "tags": [{"name": a.name, "description": a.title} for a in apis.values()],
        "paths": paths,
        "components": {
            "securitySchemes": {"token": {"type": "apiKey", "in": "header", "name": "X-Auth-Token"}},
            "schemas": {f"{a.name}_error": a.error_schema for a in apis.values()},
        },
        "security": [{"token": []}],
    }
