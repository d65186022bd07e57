"""Compute API versions: the documents keystoneauth discovers, and microversion negotiation.

Stratus honours exactly microversion 2.1: a request for anything newer gets 406, so a client never believes
a behaviour it asked for was applied when it was not.
"""

from __future__ import annotations

import functools
import re
from typing import Any

from aiohttp import web

from common import exceptions
from services.api.app import Handler
from services.api.validation import shorten

__all__ = ["MAX_VERSION", "MIN_VERSION", "NotAcceptable", "negotiated", "requested_version", "version_doc"]

MIN_VERSION = (2, 1)
MAX_VERSION = (2, 1)
_UPDATED = "2013-07-23T11:33:21Z"
# ASCII digits only (``\d`` would take any script's), and at most three of them on each side.
_VERSION_RE = re.compile(r"^([1-9][0-9]{0,2})\.([1-9][0-9]{0,2}|0)$")
_HEADERS = ("OpenStack-API-Version", "X-OpenStack-Nova-API-Version")


class NotAcceptable(exceptions.StratusError):
    code = 406
    title = "notAcceptable"


def _fmt(v: tuple[int, int]) -> str:
    return f"{v[0]}.{v[1]}"


def requested_version(headers: Any) -> tuple[int, int]:
    """The microversion a request asks for (``OpenStack-API-Version: compute X.Y`` or the legacy header).

    Raises ``BadRequest`` for a malformed value and ``NotAcceptable`` for one outside [MIN, MAX].
    """
    raw = None
    value = headers.get(_HEADERS[0])
    if value:
        for part in value.split(","):
            service, _, ver = part.strip().partition(" ")
            if service.lower() == "compute":
                raw = ver.strip()
    if raw is None:
        raw = headers.get(_HEADERS[1])
    if not raw:
        return MIN_VERSION
    if raw.lower() == "latest":
        return MAX_VERSION
    m = _VERSION_RE.match(raw)
    if not m:
        raise exceptions.BadRequest(
            f"API version string {shorten(raw)} is not in the form 'X.Y' or 'latest' (X and Y of at most 3 digits)."
        )
    version = (int(m.group(1)), int(m.group(2)))
    if not MIN_VERSION <= version <= MAX_VERSION:
        raise NotAcceptable(
            f"Version {raw} is not supported by the API. Minimum is {_fmt(MIN_VERSION)} and maximum is "
            f"{_fmt(MAX_VERSION)}."
        )
    return version


def negotiated(handler: Handler) -> Handler:
    """Check the requested microversion before the handler runs; label every answer with the version served."""

    @functools.wraps(handler)
    async def wrapper(request: web.Request) -> web.StreamResponse:
        version = _fmt(requested_version(request.headers))
        resp = await handler(request)
        resp.headers["OpenStack-API-Version"] = f"compute {version}"
        resp.headers["X-OpenStack-Nova-API-Version"] = version
        resp.headers["Vary"] = ", ".join(_HEADERS)
        return resp

    return wrapper


def version_doc(base: str) -> dict[str, Any]:
    return {
        "id": "v2.1",
        "status": "CURRENT",
        "version": _fmt(MAX_VERSION),
        "min_version": _fmt(MIN_VERSION),
        "updated": _UPDATED,
        "links": [
            {"rel": "self", "href": f"{base}/compute/v2.1/"},
            {"rel": "describedby", "type": "text/html", "href": "https://docs.openstack.org/"},
        ],
        "media-types": [{"base": "application/json", "type": "application/vnd.openstack.compute+json;version=2.1"}],
    }
