"""OpenStack-shaped errors: ``{"badRequest": {"code": 400, "message": "..."}}``.

Handlers raise ``common.exceptions`` classes (or ``ApiError``); the error middleware turns every one into this
shape, and anything unexpected into a 500 that names the request id (never a traceback).
"""

from __future__ import annotations

from aiohttp import web

from common import exceptions

__all__ = ["error_response"]


def error_response(exc: exceptions.StratusError, request_id: str) -> web.Response:
    body = {exc.title: {"code": exc.code, "message": exc.message}}
    return web.json_response(body, status=exc.code, headers={"x-openstack-request-id": request_id})
