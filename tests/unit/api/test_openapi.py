"""The OpenAPI document against the application's router: one operation per registered route, none extra, a
valid OpenAPI 3.1 document; and every value a request carries is bounded by its route's schemas."""

from __future__ import annotations

import json
from typing import Any

import pytest
from openapi_spec_validator import validate

from common.config import new_conf
from services.api.app import OPENAPI, create_app
from services.api.routes import ROUTES_KEY


class _NoTransport:
    """Stands in for the broker transport: building the application sends nothing."""

    connected = True

    def client(self) -> None:
        return None


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    conf = new_conf()
    conf([], project="stratus", default_config_files=[])
    conf.set_override("state_path", str(tmp_path_factory.mktemp("state")))
    return create_app(conf, None, _NoTransport())  # no database: nothing is served here


@pytest.fixture(scope="module")
def document(app) -> dict[str, Any]:
    return json.loads(app[OPENAPI])


def test_every_registered_route_is_documented_and_nothing_else(app, document):
    registered = {(r.method.lower(), r.resource.canonical) for r in app.router.routes()}
    documented = {(method, path) for path, ops in document["paths"].items() for method in ops}
    assert registered - documented == set(), "routes missing from the document"
    assert documented - registered == set(), "documented operations no route serves"
    assert len(registered) == len(app[ROUTES_KEY])


def test_the_document_is_valid_openapi(document):
    assert document["openapi"].startswith("3.1")
    validate(document)


def test_markers_reach_the_document(document):
    token = document["paths"]["/identity/v3/auth/tokens"]["post"]
    assert token["x-stratus-public"] is True and token["security"] == [] and "401" not in token["responses"]
    servers = document["paths"]["/compute/v2.1/servers"]["get"]
    assert "x-stratus-public" not in servers and "401" in servers["responses"]
    assert document["paths"]["/compute/v2.1/flavors"]["post"]["x-stratus-admin-only"] is True
    assert document["paths"]["/openapi.json"]["get"]["x-stratus-public"] is True


def test_errors_are_documented_in_each_apis_shape(document):
    schemas = document["components"]["schemas"]
    assert schemas["identity_error"]["required"] == ["error"]
    assert schemas["network_error"]["required"] == ["NeutronError"]
    assert schemas["compute_error"]["maxProperties"] == 1
    for path, api in (("/identity/v3/users", "identity"), ("/network/v2.0/ports", "network"),
                      ("/compute/v2.1/servers", "compute"), ("/image/v2/images", "image")):  # fmt: skip
        ref = document["paths"][path]["get"]["responses"]["404"]["content"]["application/json"]["schema"]["$ref"]
        assert ref == f"#/components/schemas/{api}_error"


def _unbounded(schema: Any, where: str) -> list[str]:
    """Places in ``schema`` where a string has no maxLength or a number no maximum (untyped parts, such as
    Keystone's ``scope.system``, are never read)."""
    if not isinstance(schema, dict):
        return []
    out = []
    types = schema.get("type", [])
    types = [types] if isinstance(types, str) else types
    # A number kept as text (its handler checks its range, the column cannot overflow) says so in $comment.
    if "enum" not in schema and "const" not in schema and schema.get("$comment") != "stored as text":
        if "string" in types and "maxLength" not in schema:
            out.append(f"{where}: a string without maxLength")
        if ("integer" in types or "number" in types) and "maximum" not in schema:
            out.append(f"{where}: a number without maximum")
    for key in ("properties", "patternProperties"):
        for name, sub in schema.get(key, {}).items():
            out += _unbounded(sub, f"{where}/{name}")
    for key in ("items", "additionalProperties", "propertyNames", "not"):
        out += _unbounded(schema.get(key), f"{where}/{key}")
    for key in ("oneOf", "anyOf", "allOf"):
        for i, sub in enumerate(schema.get(key, [])):
            out += _unbounded(sub, f"{where}/{key}/{i}")
    return out


def test_every_string_and_number_a_request_carries_is_bounded(app):
    problems = []
    for api, route in app[ROUTES_KEY]:
        op = f"{route.method} {route.path}"
        for name, schema in route.path_params.items():
            problems += _unbounded(schema, f"{op} path {name}")
        for name, param in {**route.query, **api.headers, **route.headers}.items():
            problems += _unbounded(param.schema, f"{op} {name}")
        problems += _unbounded(route.body, f"{op} body")
    assert problems == []
