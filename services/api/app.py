"""The API application: one aiohttp app serving the OpenStack path layout on one port.

Handlers reach shared objects through typed ``AppKey``s and the request's ``RequestContext`` through ``ctx()``.
The API node is stateless: tokens are verified by signature, every other fact lives in PostgreSQL.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import asyncpg
import orjson
from aiohttp import web
from oslo_config import cfg
from prometheus_client import CONTENT_TYPE_LATEST, Counter, Histogram, generate_latest

from common import exceptions
from common.context import NEEDS_PROJECT, RequestContext, generate_request_id
from common.db.pool import RETRYABLE as DB_RETRYABLE
from common.db.pool import Database
from common.rpc import RpcClient, Transport
from services.api.auth import TokenPayload, TokenSigner
from services.api.errors import MethodNotAllowed, error_response
from services.api.revocation import Revocations
from services.api.validation import shorten

__all__ = [
    "CONF",
    "DB",
    "DRAINING",
    "REVOCATIONS",
    "RPC",
    "SIGNER",
    "create_app",
    "ctx",
    "public",
    "require_admin",
    "unscoped_ok",
]

LOG = logging.getLogger(__name__)

CONF = web.AppKey("conf", cfg.ConfigOpts)
DB = web.AppKey("db", Database)
TRANSPORT = web.AppKey("transport", Transport)
RPC = web.AppKey("rpc", RpcClient)
SIGNER = web.AppKey("signer", TokenSigner)
REVOCATIONS = web.AppKey("revocations", Revocations)
DRAINING = web.AppKey("draining", asyncio.Event)
DB_LAST_OK = web.AppKey("db_last_ok", list)  # [monotonic time of the last successful database probe]

# A database unreachable for less than this still counts as reachable in /healthcheck: a restart (~1 s) is
# ridden out by the handlers' retries (Database.run), while failing the check would take every API node out of
# HAProxy at once and turn those retries into 503s for everyone.
DB_GRACE_SECONDS = 3.0

REQUESTS = Counter("stratus_api_requests_total", "API requests", ["method", "status"])
LATENCY = Histogram("stratus_api_request_seconds", "API request latency", ["method"])
DATA_ERRORS = Counter(
    "stratus_api_data_errors_total",
    "Requests the database refused a value of (answered 400): each is a value a route's schema should bound",
    ["error"],
)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def public(handler: Handler) -> Handler:
    """Mark a handler as reachable without a token (version documents, token issue, health)."""
    handler.__stratus_public__ = True  # type: ignore[attr-defined]
    return handler


def unscoped_ok(handler: Handler) -> Handler:
    """Mark a handler an unscoped token may reach (as in Keystone: list the user's projects, inspect the token,
    get a scoped one). Every other route refuses a token without a project."""
    handler.__stratus_unscoped__ = True  # type: ignore[attr-defined]
    return handler


def ctx(request: web.Request) -> RequestContext:
    return request["ctx"]


def require_admin(request: web.Request) -> RequestContext:
    c = ctx(request)
    if not c.is_admin:
        raise exceptions.Forbidden("Policy doesn't allow this operation: it needs the admin role.")
    return c


def _marked(request: web.Request, marker: str) -> bool:
    handler = request.match_info.handler
    target = getattr(handler, "__func__", handler)
    return bool(getattr(target, marker, False))


def _is_public(request: web.Request) -> bool:
    return _marked(request, "__stratus_public__")


def _authenticate(request: web.Request, token: str, request_id: str) -> RequestContext:
    """The context of a request that carries a token: ``Unauthorized`` for a bad, expired or revoked one,
    ``Forbidden`` for an unscoped token on a route that needs a project, ``BadRequest`` for a Compute URL that
    names another project than the token's (as Nova answers)."""
    p: TokenPayload = request.app[SIGNER].verify(token)
    if request.app[REVOCATIONS].revoked(p):
        raise exceptions.Unauthorized("The token has been revoked.")
    c = RequestContext(
        request_id=request_id,
        user_id=p.user_id,
        project_id=p.project_id,
        roles=p.roles,
        user_name=p.user_name,
        project_name=p.project_name,
    )
    request["token"] = p
    if p.project_id is None and not (_is_public(request) or _marked(request, "__stratus_unscoped__")):
        raise exceptions.Forbidden(NEEDS_PROJECT)
    url_project = request.match_info.get("url_project_id")
    if url_project is not None and url_project != p.project_id:
        raise exceptions.BadRequest(
            f"Malformed request URL: URL's project_id '{url_project[:64]}' doesn't match Context's project_id "
            f"'{p.project_id}'"
        )
    return c


@web.middleware
async def _context_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Request id, authentication, the OpenStack error shape, metrics — for every request."""
    request_id = generate_request_id()
    started = time.monotonic()
    status = 500
    anonymous = RequestContext(request_id=request_id)
    anonymous.bind()  # what is logged while the token is checked carries the request id too
    try:
        token = request.headers.get("X-Auth-Token")
        if token and request.match_info.route.resource is not None:
            c = _authenticate(request, token, request_id)
        elif _is_public(request) or request.match_info.http_exception is not None:
            c = anonymous
        else:
            raise exceptions.Unauthorized("The request you have made requires authentication.")
        request["ctx"] = c
        c.bind()
        resp = await handler(request)
        status = resp.status
    except exceptions.StratusError as e:
        status = e.code
        if e.code >= 500:
            LOG.error("%s %s failed: %s", request.method, request.path, e.message)
        elif e.code in (401, 403):  # refused before the handler ran: say so, as the handler's own lines would
            LOG.info("%s %s refused (%d): %s", request.method, request.path[:200], e.code, e.message)
        resp = error_response(request, e, request_id)
    except web.HTTPException as e:
        status = e.status
        if e.status >= 400 and e.status != 405 and e.status != 404:
            raise
        path = shorten(request.path)
        error: exceptions.StratusError = (
            exceptions.NotFound(f"The resource could not be found: {path}")
            if e.status == 404
            else MethodNotAllowed(f"Method {request.method} is not allowed for {path}")
        )
        resp = error_response(request, error, request_id)
    except asyncpg.DataError as e:
        # Defence in depth: the route's schemas bound every value a column holds, so this never fires for
        # anything they know of; when it does, the schema that let the value through is the bug to fix.
        status = 400
        DATA_ERRORS.labels(type(e).__name__).inc()
        LOG.warning("%s %s: the database refused a value the route's schemas let through: %s: %s",
                    request.method, request.path, type(e).__name__, shorten(str(e)))  # fmt: skip
        resp = error_response(
            request, exceptions.BadRequest(f"A value cannot be stored: {shorten(str(e))}"), request_id
        )
    except (asyncpg.PostgresConnectionError, *DB_RETRYABLE) as e:
        # A handler that used db.transaction() directly (no retry) met a restarting or lost database: a clean
        # 503 the client may retry, never a 500.
        status = 503
        LOG.error("%s %s: database unavailable: %s", request.method, request.path, e)
        resp = error_response(
            request,
            exceptions.ServiceUnavailable(f"The database is unavailable; retry later (request {request_id})."),
            request_id,
        )
        resp.headers["Retry-After"] = "1"
    except Exception:
        status = 500
        LOG.exception("%s %s failed unexpectedly", request.method, request.path)
        resp = error_response(
            request,
            exceptions.StratusError(
                f"Unexpected API error (request {request_id}); the operator can find it in the API log."
            ),
            request_id,
        )
    if request.app[DRAINING].is_set():
        # No keep-alive while draining: the load balancer must not reuse a connection to a node about to close.
        resp.force_close()
    resp.headers["x-openstack-request-id"] = request_id
    resp.headers["x-compute-request-id"] = request_id
    REQUESTS.labels(request.method, str(status)).inc()
    LATENCY.labels(request.method).observe(time.monotonic() - started)
    return resp


@public
async def healthcheck(request: web.Request) -> web.Response:
    """200 only when this node reaches the database (allowing a blip of ``DB_GRACE_SECONDS``) and the broker,
    503 while draining before shutdown."""
    app = request.app
    problems = []
    if app[DRAINING].is_set():
        problems.append("draining")
    now = time.monotonic()
    try:
        await asyncio.wait_for(app[DB].ping(), 2)
        app[DB_LAST_OK][0] = now
    except Exception as e:  # any failure of the probe means unreachable; unhealthy once past the grace
        if now - app[DB_LAST_OK][0] > DB_GRACE_SECONDS:
            problems.append(f"database: {e or type(e).__name__}")
    if not app[TRANSPORT].connected:
        problems.append("broker: not connected")
    if not app[REVOCATIONS].loaded.is_set():
        problems.append("revocation events: not loaded yet")
    if problems:
        return web.Response(status=503, text="; ".join(problems) + "\n")
    return web.Response(text="OK\n")


@public
async def metrics(request: web.Request) -> web.Response:
    """The API node's Prometheus metrics."""
    return web.Response(body=generate_latest(), headers={"Content-Type": CONTENT_TYPE_LATEST})


@public
async def root(request: web.Request) -> web.Response:
    """Where each API and the OpenAPI description of them all are."""
    base = request.app[CONF].api.public_endpoint.rstrip("/")
    return web.json_response(
        {
            "name": "stratus",
            "services": {
                "identity": f"{base}/identity/v3",
                "compute": f"{base}/compute/v2.1",
                "image": f"{base}/image/v2",
                "network": f"{base}/network/v2.0",
            },
            "openapi": f"{base}/openapi.json",
        }
    )


@public
async def openapi(request: web.Request) -> web.Response:
    """The OpenAPI 3.1 description of every route, generated from the route table at startup."""
    return web.Response(body=request.app[OPENAPI], content_type="application/json")


OPENAPI = web.AppKey("openapi", bytes)


def _root_routes() -> list[Any]:
    from services.api.compute import NOVA_ERROR
    from services.api.routes import Route
    from services.api.shapes import STR, obj

    plain = {"type": "string"}
    text = {200: "text/plain", 503: "text/plain"}
    return [
        Route("GET", "/", root, "Where each API is", {200: obj({"name": STR, "services": obj(
            dict.fromkeys(("identity", "compute", "image", "network"), STR)), "openapi": STR},
            required=("services",))}),
        Route("GET", "/healthcheck", healthcheck, "200 when this node reaches the database and broker",
              {200: plain, 503: plain}, media=text),
        Route("HEAD", "/healthcheck", healthcheck, "As GET, without the body", {200: None, 503: None}),
        Route("GET", "/metrics", metrics, "Prometheus metrics", {200: plain}, media={200: CONTENT_TYPE_LATEST}),
        Route("GET", "/openapi.json", openapi, "This document (OpenAPI 3.1)",
              {200: obj({"openapi": STR, "paths": {"type": "object"}}, required=("openapi", "paths"))}),
    ], NOVA_ERROR  # fmt: skip


async def _revocations_ctx(app: web.Application) -> AsyncIterator[None]:
    """Revocation events load with the application and reload until it stops. A first load that fails is
    retried by the reload loop; until one succeeds /healthcheck says so (503), keeping the node out of the
    load balancer rather than accepting tokens it cannot check."""
    revocations = app[REVOCATIONS]
    try:
        await revocations.reload()
    except Exception as e:
        LOG.warning("could not load revocation events yet (retrying): %s", e)
    await revocations.start_refreshing()
    yield
    await revocations.stop()


def create_app(conf: cfg.ConfigOpts, db: Database, transport: Transport) -> web.Application:
    """Build the application around already-open resources (the caller owns their lifecycle)."""
    from services.api import compute, identity, image, network, routes
    from services.api.routes import error_body

    app = web.Application(middlewares=[_context_middleware], client_max_size=64 * 1024**2)
    app[CONF] = conf
    app[DB] = db
    app[TRANSPORT] = transport
    app[RPC] = transport.client()
    app[SIGNER] = TokenSigner(conf.api.token_secret, conf.api.token_ttl)
    app[REVOCATIONS] = Revocations(db, conf.api.revocation_refresh_interval)
    app.cleanup_ctx.append(_revocations_ctx)
    app[DRAINING] = asyncio.Event()
    app[DB_LAST_OK] = [time.monotonic()]
    table, nova_error = _root_routes()
    routes.register(app, routes.Api("stratus", "", "Version documents and the node itself", error_body, nova_error),
                    table)  # fmt: skip
    identity.add_routes(app)
    compute.add_routes(app)
    image.add_routes(app)
    network.add_routes(app)
    document = routes.openapi_document(app[routes.ROUTES_KEY], conf.api.public_endpoint.rstrip("/"), _version())
    app[OPENAPI] = orjson.dumps(document)
    return app


def _version() -> str:
    try:
        return importlib.metadata.version("stratus")
    except importlib.metadata.PackageNotFoundError:  # run from a checkout that was never installed
        return "0"


def paginate(params: Any) -> tuple[int | None, str | None]:
    """``limit`` and ``marker`` query parameters, validated."""
    limit = params.get("limit")
    if limit is not None:
        try:
            limit = int(limit)
        except ValueError:
            raise exceptions.BadRequest(f"limit must be an integer, not {shorten(limit)}") from None
        if limit < 0:
            raise exceptions.BadRequest("limit must be >= 0")
    return limit, params.get("marker")
