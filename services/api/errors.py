"""Errors in the shape of the API a request is for: Nova's ``{"badRequest": {"code": 400, "message": "..."}}``,
Keystone's ``{"error": {...}}``, Neutron's ``{"NeutronError": {...}}`` (each ``routes.Api`` says which).

Handlers raise ``common.exceptions`` classes; the error middleware turns every one into its API's shape (the API
of the matched route, else of the path's prefix), and anything unexpected into a 500 that names the request id
(never a traceback).
"""

from __future__ import annotations

from aiohttp import web

from common import exceptions
from services.api.routes import api_for_path, error_body, route_of

__all__ = ["MethodNotAllowed", "error_response"]


class MethodNotAllowed(exceptions.StratusError):
    code = 405
    title = "badMethod"


def error_response(request: web.Request, exc: exceptions.StratusError, request_id: str) -> web.Response:
    api, _ = route_of(request)
    if api is None:
        api = api_for_path(request.path)
    body = api.error_body(exc) if api is not None else error_body(exc)
    return web.json_response(body, status=exc.code, headers={"x-openstack-request-id": request_id})
