"""Request body validation with JSON Schema; messages name the field at fault."""

from __future__ import annotations

import json
from typing import Any

import jsonschema
from aiohttp import web

from common import exceptions

__all__ = ["json_body", "validate"]

_validators: dict[int, jsonschema.Draft202012Validator] = {}


def validate(schema: dict[str, Any], body: Any) -> None:
    """Raise ``BadRequest`` naming the first offending field."""
    validator = _validators.get(id(schema))
    if validator is None:
        validator = _validators[id(schema)] = jsonschema.Draft202012Validator(schema)
    error = jsonschema.exceptions.best_match(validator.iter_errors(body))
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
