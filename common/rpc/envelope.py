"""The wire format: JSON bodies ``{method, args, version}``, context in headers, typed error replies.

A *batch* carries several casts to one topic in one message (``Transport.cast`` coalesces them): header
``batch`` = the count, body ``{"batch": [{"request": <a single body>, "headers": <its headers>}, ...]}``, so
each cast keeps its own context, sender and timestamp, and a consumer handles each as if it came alone.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from common import exceptions, jsonutils
from common.context import RequestContext

__all__ = [
    "VERSION",
    "Request",
    "decode_batch",
    "decode_reply",
    "decode_request",
    "encode_batch",
    "encode_error",
    "encode_request",
    "encode_result",
    "is_batch",
    "request_from",
    "requests_in",
]

VERSION = "1.0"
_CTX_KEYS = ("request_id", "user_id", "project_id", "user_name", "project_name")


class MalformedMessage(ValueError):
    """A message no handler can make sense of: it goes to the dead-letter queue."""


@dataclass(frozen=True)
class Request:
    method: str
    args: dict[str, Any]
    version: str
    ctx: RequestContext
    sender: str | None
    sent_at: float | None


def encode_request(method: str, args: dict[str, Any], ctx: RequestContext, sender: str) -> tuple[bytes, dict]:
    body = jsonutils.dumps({"method": method, "args": args, "version": VERSION})
    headers: dict[str, Any] = {k: v for k in _CTX_KEYS if (v := getattr(ctx, k)) is not None}
    headers["roles"] = ",".join(ctx.roles)
    headers["sender"] = sender
    headers["sent_at"] = f"{time.time():.6f}"
    return body, headers


def _header_str(value: Any) -> str | None:
    if value is None:
        return None
    return value.decode() if isinstance(value, bytes) else str(value)


def decode_request(body: bytes, headers: dict[str, Any] | None) -> Request:
    try:
        data = jsonutils.loads(body)
    except (ValueError, UnicodeDecodeError) as e:
        raise MalformedMessage(f"body is not JSON: {e}") from e
    return request_from(data, headers)


def request_from(data: Any, headers: dict[str, Any] | None) -> Request:
    """The request in a decoded body ``data`` with its ``headers``; ``MalformedMessage`` when it is not one."""
    if not isinstance(data, dict) or not isinstance(data.get("method"), str) or not isinstance(data.get("args"), dict):
        raise MalformedMessage("body must be an object with a string 'method' and an object 'args'")
    h = {k: _header_str(v) for k, v in (headers or {}).items()}
    roles = tuple(r for r in (h.get("roles") or "").split(",") if r)
    ctx = RequestContext.from_dict({**{k: h.get(k) for k in _CTX_KEYS}, "roles": roles})
    sent_at = h.get("sent_at")
    return Request(
        method=data["method"],
        args=data["args"],
        version=str(data.get("version", VERSION)),
        ctx=ctx,
        sender=h.get("sender"),
        sent_at=float(sent_at) if sent_at else None,
    )


def encode_batch(parts: list[tuple[bytes, dict[str, Any]]], sender: str) -> tuple[bytes, dict[str, Any]]:
    """One message carrying the encoded requests ``parts`` (``encode_request``'s results, in order)."""
    items = b",".join(b'{"request":' + body + b',"headers":' + jsonutils.dumps(h) + b"}" for body, h in parts)
    return b'{"batch":[' + items + b"]}", {"batch": len(parts), "sender": sender, "sent_at": f"{time.time():.6f}"}


def is_batch(headers: dict[str, Any] | None) -> bool:
    return headers is not None and "batch" in headers


def decode_batch(body: bytes) -> list[tuple[Any, dict[str, Any]]]:
    """The (decoded body, headers) of each request in a batch, for ``request_from``; ``MalformedMessage`` when
    the batch itself cannot be read (a malformed item is found by ``request_from``, item by item)."""
    try:
        data = jsonutils.loads(body)
    except (ValueError, UnicodeDecodeError) as e:
        raise MalformedMessage(f"batch body is not JSON: {e}") from e
    items = data.get("batch") if isinstance(data, dict) else None
    if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
        raise MalformedMessage("batch body must be an object with a list of objects 'batch'")
    return [(i.get("request"), i.get("headers") if isinstance(i.get("headers"), dict) else {}) for i in items]


def requests_in(body: bytes, headers: dict[str, Any] | None) -> list[Request]:
    """Every request a message carries: one, or each of a batch (for readers outside a dispatcher, which
    handles a malformed request of a batch on its own)."""
    if is_batch(headers):
        return [request_from(data, h) for data, h in decode_batch(body)]
    return [decode_request(body, headers)]


def encode_result(result: Any) -> bytes:
    return jsonutils.dumps({"result": result})


def encode_error(exc: BaseException) -> bytes:
    message = exc.message if isinstance(exc, exceptions.StratusError) else str(exc)
    return jsonutils.dumps({"error": {"type": type(exc).__name__, "message": message}})


def decode_reply(body: bytes) -> Any:
    """The call's result, or raise the remote error (whitelisted class, else ``RemoteError``)."""
    data = jsonutils.loads(body)
    if "error" in data:
        err = data["error"]
        cls = exceptions.by_name(err.get("type", ""))
        if cls is not None:
            raise cls(err.get("message", ""))
        raise exceptions.RemoteError(err.get("type", "?"), err.get("message", ""))
    return data.get("result")
