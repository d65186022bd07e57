"""Errors in each API's own shape: Nova's ``{"badRequest": {"code": 400, "message": "..."}}`` (also for Glance
and the top level), Keystone's ``{"error": {"code", "message", "title"}}`` under ``/identity``, Neutron's
``{"NeutronError": {"type", "message", "detail"}}`` under ``/network``.

Handlers raise ``common.exceptions`` classes; the API packages' wrappers and the error middleware turn every
one into its API's shape, and anything unexpected into a 500 that names the request id (never a traceback).
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from common import exceptions

__all__ = ["error_body", "error_response"]


def error_body(exc: exceptions.StratusError, path: str = "/") -> dict[str, Any]:
    """The body of ``exc`` in the shape of the API that serves ``path``."""
    name = type(exc).__name__ if type(exc).__module__ == exceptions.__name__ else exc.title
    if path.startswith("/identity"):
        return {"error": {"code": exc.code, "message": exc.message, "title": name}}
    if path.startswith("/network"):
        return {"NeutronError": {"type": name, "message": exc.message, "detail": ""}}
    return {exc.title: {"code": exc.code, "message": exc.message}}


def error_response(exc: exceptions.StratusError, request_id: str, path: str = "/") -> web.Response:
    return web.json_response(error_body(exc, path), status=exc.code, headers={"x-openstack-request-id": request_id})
