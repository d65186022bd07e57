"""Request body validation with JSON Schema; messages name the field at fault.

Two validators per schema, both Draft 2020-12: jsonschema-rs says whether a body is valid (under a microsecond
for a server create, where jsonschema took 63-73 µs), and only a body it refuses is checked again by jsonschema,
whose ``best_match`` names the field in the 400. jsonschema's verdict is the one that counts: where the two differ
(Python's ``$`` also matches before a final newline, Rust's does not), a body jsonschema accepts is accepted.
"""

from __future__ import annotations

import functools
import json
import logging
from collections import OrderedDict
from typing import Any

import jsonschema
import jsonschema_rs
import orjson
from aiohttp import web

from common import exceptions

__all__ = ["json_body", "validate"]

LOG = logging.getLogger(__name__)

_Checkers = tuple[jsonschema_rs.Validator | None, jsonschema.Draft202012Validator]

# By identity first: a module's schema is the same dict on every request. Handlers also build schemas per request
# (one action's, one resource's attributes), so this is bounded, and it holds each schema it names, so an id
# cannot be reused by another dict while its entry lives; those schemas are then found by their text.
_BY_ID_MAX = 256
_by_id: OrderedDict[int, tuple[dict[str, Any], _Checkers]] = OrderedDict()


@functools.lru_cache(maxsize=_BY_ID_MAX)
def _compiled(text: bytes) -> _Checkers:
    schema = orjson.loads(text)
    full = jsonschema.Draft202012Validator(schema)
    try:
        return jsonschema_rs.Draft202012Validator(schema), full
    except Exception:  # e.g. a pattern Rust's regex engine cannot compile: every body takes the slow path
        LOG.warning("jsonschema-rs cannot compile a request schema; validating with jsonschema alone", exc_info=True)
        return None, full


def _checkers(schema: dict[str, Any]) -> _Checkers:
    key = id(schema)
    entry = _by_id.get(key)
    if entry is not None and entry[0] is schema:
        _by_id.move_to_end(key)
        return entry[1]
    checkers = _compiled(orjson.dumps(schema, option=orjson.OPT_SORT_KEYS))
    _by_id[key] = (schema, checkers)
    if len(_by_id) > _BY_ID_MAX:
        _by_id.popitem(last=False)
    return checkers


def validate(schema: dict[str, Any], body: Any) -> None:
    """Raise ``BadRequest`` naming the first offending field."""
    fast, full = _checkers(schema)
    if fast is not None and fast.is_valid(body):
        return
    error = jsonschema.exceptions.best_match(full.iter_errors(body))
    if error is None:
        return
    where = "/".join(str(p) for p in error.absolute_path) or "body"
    raise exceptions.BadRequest(f"Invalid input for field/attribute {where}: {error.message}")


async def json_body(request: web.Request, schema: dict[str, Any] | None = None) -> Any:
    """The request's JSON body, validated against ``schema``; malformed JSON is a 400 that says so."""
    raw = await request.read()
    if not raw:
        raise exceptions.BadRequest("The request body is empty; a JSON object was expected")
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as e:
        raise exceptions.BadRequest(f"Malformed request body: {e}") from e
    if schema is not None:
        validate(schema, body)
    return body
