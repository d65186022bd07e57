"""Request validation with JSON Schema; messages name the field at fault and the limit it broke.

Two validators per schema, both Draft 2020-12: jsonschema-rs says whether a value is valid (under a microsecond
for a server create, where jsonschema took 63-73 µs), and only a value it refuses is checked again by jsonschema,
whose ``best_match`` names the field in the 400. jsonschema's verdict is the one that counts: where the two differ
(Python's ``$`` also matches before a final newline, Rust's does not), a value jsonschema accepts is accepted.

Bodies are parsed by ``parse_body``: orjson refuses what no column can hold (NaN and Infinity, numbers beyond a
double, lone UTF-16 surrogates, invalid UTF-8), and this module refuses NUL characters (PostgreSQL's text cannot
hold them) and nesting deeper than ``MAX_DEPTH``. Messages quote at most ``ECHO_LIMIT`` characters of a value.
"""

from __future__ import annotations

import functools
import logging
from collections import OrderedDict
from typing import Any

import jsonschema
import jsonschema_rs
import orjson
from aiohttp import web

from common import exceptions, jsonutils

__all__ = [
    "BODY",
    "Checker",
    "ECHO_LIMIT",
    "MAX_DEPTH",
    "bad_text",
    "json_body",
    "parse_body",
    "shorten",
    "validate",
]

LOG = logging.getLogger(__name__)

BODY = web.RequestKey("stratus_body", object)  # the body its route validated (see ``services.api.routes``)
ECHO_LIMIT = 200  # characters of an invalid value an error message quotes
MAX_DEPTH = 32  # nesting of a request body: no Stratus request needs more than 6

_Checkers = tuple[jsonschema_rs.Validator | None, jsonschema.Draft202012Validator]

# By identity first: a module's schema is the same dict on every request. Schemas built at run time (tests,
# callers outside the route table) are also found by their text; both caches are bounded.
_BY_ID_MAX = 256
_by_id: OrderedDict[int, tuple[dict[str, Any], _Checkers]] = OrderedDict()

# Validators whose jsonschema message does not state the limit itself ("'xxx' is too long").
_STATE_LIMIT = {"maxLength", "minLength", "maxItems", "minItems", "maxProperties", "minProperties", "pattern"}


def shorten(value: Any, limit: int = ECHO_LIMIT) -> str:
    """``repr(value)``, cut to ``limit`` characters with a note of the full length: safe to echo in a message."""
    if isinstance(value, str):
        return repr(value) if len(value) <= limit else f"{value[:limit]!r}... ({len(value)} characters)"
    text = repr(value)
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... ({len(text)} characters of {type(value).__name__})"


@functools.lru_cache(maxsize=_BY_ID_MAX)
def _compiled(text: bytes) -> _Checkers:
    schema = orjson.loads(text)
    full = jsonschema.Draft202012Validator(schema)
    try:
        return jsonschema_rs.Draft202012Validator(schema, validate_formats=False), full
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


def _describe(error: jsonschema.ValidationError) -> str:
    """jsonschema's message with the instance cut to ``ECHO_LIMIT`` and the broken limit named."""
    message = error.message
    if len(message) > ECHO_LIMIT:
        full = repr(error.instance)
        message = message.replace(full, shorten(error.instance)) if full in message else shorten(message)
    if error.validator in _STATE_LIMIT:
        message += f" ({error.validator} {error.validator_value})"
    return message


def _check(checkers: _Checkers, value: Any, what: str, root: str) -> None:
    fast, full = checkers
    if fast is not None and fast.is_valid(value):
        return
    try:
        error = jsonschema.exceptions.best_match(full.iter_errors(value))
    except RecursionError:  # parse_body bounds nesting; this is for values from elsewhere
        raise exceptions.BadRequest(f"Invalid input for {what} {root}: nested too deeply") from None
    if error is None:
        return
    where = "/".join(str(p) for p in error.absolute_path) or root
    raise exceptions.BadRequest(f"Invalid input for {what} {where}: {_describe(error)}")


def validate(schema: dict[str, Any], value: Any, *, what: str = "field/attribute", root: str = "body") -> None:
    """Raise ``BadRequest`` naming the first offending field (``server/name``) and the limit it broke.

    ``what`` and ``root`` name the kind of value in the message: a body's fields, a query or a path parameter.
    """
    _check(_checkers(schema), value, what, root)


class Checker:
    """One schema compiled once (the route table holds one per body, path and query parameter), so checking a
    request costs no cache lookup and no re-serialisation of the schema."""

    __slots__ = ("_checkers", "schema")

    def __init__(self, schema: dict[str, Any]) -> None:
        self.schema = schema
        self._checkers = _compiled(orjson.dumps(schema, option=orjson.OPT_SORT_KEYS))

    def check(self, value: Any, *, what: str = "field/attribute", root: str = "body") -> None:
        """As ``validate``."""
        _check(self._checkers, value, what, root)


def bad_text(value: str) -> str | None:
    """Why ``value`` cannot be stored as PostgreSQL text (a NUL, a lone surrogate), or None when it can."""
    if "\x00" in value:
        return "NUL characters are not allowed"
    try:
        value.encode()
    except UnicodeEncodeError:
        return "lone UTF-16 surrogates are not allowed"
    return None


def _offence(body: Any) -> str | None:
    """The first place in a parsed body nested deeper than ``MAX_DEPTH`` or holding a NUL, as a message."""
    stack: list[tuple[Any, tuple[str, ...]]] = [(body, ())]
    while stack:
        value, path = stack.pop()
        if len(path) > MAX_DEPTH:
            where = "/".join(path[:4]) + "/..."
            return f"Invalid input for field/attribute {where}: the body is nested deeper than {MAX_DEPTH} levels"
        if isinstance(value, dict):
            for k, v in value.items():
                if "\x00" in k:
                    return f"Invalid input for field/attribute {'/'.join(path) or 'body'}: a key holds a NUL character"
                stack.append((v, (*path, k)))
        elif isinstance(value, list):
            stack.extend((v, (*path, str(i))) for i, v in enumerate(value))
        elif isinstance(value, str) and "\x00" in value:
            return f"Invalid input for field/attribute {'/'.join(path) or 'body'}: NUL characters are not allowed"
    return None


def parse_body(raw: bytes) -> Any:
    """The JSON value of a request body. ``BadRequest`` for malformed JSON (orjson also refuses NaN, Infinity,
    numbers beyond a double and lone surrogates), NUL characters and nesting deeper than ``MAX_DEPTH``."""
    if not raw:
        raise exceptions.BadRequest("The request body is empty; a JSON object was expected")
    try:
        body = jsonutils.loads(raw)
    except orjson.JSONDecodeError as e:
        where = f"line {e.lineno} column {e.colno}"
        if "depth limit" in e.msg:
            raise exceptions.BadRequest(f"Invalid request body: nested deeper than {MAX_DEPTH} levels ({where})") from e
        if "surrogate" in e.msg:
            raise exceptions.BadRequest(f"Invalid request body: lone UTF-16 surrogates are refused ({where})") from e
        raise exceptions.BadRequest(f"Malformed request body: {shorten(str(e))}") from e
    # JSON can only spell a NUL as \u0000 and nest with [ and {: the walk runs only when the text has either.
    if b"\\u0000" in raw or raw.count(b"[") + raw.count(b"{") > MAX_DEPTH:
        problem = _offence(body)
        if problem is not None:
            raise exceptions.BadRequest(problem)
    return body


async def json_body(request: web.Request, schema: dict[str, Any] | None = None) -> Any:
    """The request's JSON body: the one its route already parsed and validated when the route declares a body,
    else parsed here and validated against ``schema``; malformed JSON is a 400 that says so."""
    if BODY in request:
        body = request[BODY]
    else:
        body = parse_body(await request.read())
    if schema is not None:
        validate(schema, body)
    return body
