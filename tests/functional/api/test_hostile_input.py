"""Item 7 of issue 15, case by case: hostile input on every kind of route is a 4xx in the API's own error shape
that names the field (or parameter, or header) and its limit, and never reaches the database: the counter of the
middleware's last-resort mapping of database data errors stays at zero. Then that mapping itself, forced."""

from __future__ import annotations

import json
import logging

import asyncpg
import pytest
from aiohttp import web

from services.api.app import DATA_ERRORS, create_app
from tests.functional.network.conftest import Api

pytestmark = pytest.mark.functional

C = "/compute/v2.1"
N = "/network/v2.0"
INT4_MAX = "2147483647"
BIG = "9" * 5000
NESTED = b"[" * 10_000 + b"]" * 10_000


def _data_errors() -> float:
    return sum(s.value for m in DATA_ERRORS.collect() for s in m.samples if s.name.endswith("_total"))


def _shape(prefix: str, body: dict) -> str:
    """The message, after checking the body is in the error shape of the API under ``prefix``."""
    if prefix.startswith("/network"):
        return body["NeutronError"]["message"]
    if prefix.startswith("/identity"):
        assert set(body["error"]) == {"code", "message", "title"}, body
        return body["error"]["message"]
    ((title, inner),) = body.items()  # Nova's (and Glance's): {"badRequest": {"code": 400, "message": ...}}
    assert inner["code"] == 400, body
    return inner["message"]


async def _send(api: Api, method: str, path: str, who: str, *, raw: bytes | None = None, body=None, headers=None):
    h = dict(headers or {})
    if who:
        h["X-Auth-Token"] = api.tokens[who]
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    if data is not None:
        h["Content-Type"] = "application/json"
    resp = await api.client.request(method, path, data=data, headers=h)
    return resp.status, await resp.read()


CASES = [
    # (method, path, who, raw body or JSON body, extra headers, words the message must hold)
    ("POST", "/identity/v3/auth/tokens", "", NESTED, None, ["nested deeper than 32"]),
    ("POST", f"{C}/servers", "alice", NESTED, None, ["nested deeper than 32"]),
    ("POST", f"{N}/networks", "alice", b'{"network": ' + NESTED + b"}", None, ["nested deeper than 32"]),
    ("POST", "/identity/v3/auth/tokens", "", b'{"auth": {"identity": {"methods": ["\\ud800"]}}}', None,
     ["lone UTF-16 surrogates"]),
    ("POST", f"{C}/servers", "alice", b'{"server": {"name": "\\udfff"}}', None, ["lone UTF-16 surrogates"]),
    ("POST", "/identity/v3/auth/tokens", "", {"auth": {"identity": {"methods": ["password"], "password": {"user": {
        "name": "admin", "password": "a\u0000b"}}}}}, None, ["auth/identity/password/user/password", "NUL"]),
    ("POST", f"{C}/os-keypairs", "alice", {"keypair": {"name": "k\u0000"}}, None, ["keypair/name", "NUL"]),
    ("POST", f"{N}/networks", "alice", {"network": {"name": "n\u0000"}}, None, ["network/name", "NUL"]),
    ("GET", f"{C}/servers?name=%00", "alice", None, None, ["query parameter name", "NUL"]),
    ("GET", f"{N}/networks?name=a%00", "alice", None, None, ["query parameter name", "NUL"]),
    ("GET", f"{C}/servers/a%00b", "alice", None, None, ["path parameter server_id", "NUL"]),
    ("GET", f"{N}/ports/%00", "alice", None, None, ["path parameter port_id", "NUL"]),
    ("GET", "/identity/v3/users/%00", "admin", None, None, ["path parameter user_id", "NUL"]),
    ("GET", "/image/v2/images/%00", "alice", None, None, ["path parameter image_id", "NUL"]),
    ("GET", f"{C}/servers?limit=99999999999", "alice", None, None, ["limit", INT4_MAX]),
    ("GET", f"{C}/flavors/detail?minRam=99999999999", "alice", None, None, ["minRam", INT4_MAX]),
    ("GET", f"{C}/flavors?minDisk={BIG}", "alice", None, None, ["minDisk", "integer"]),
    ("GET", f"{N}/networks?mtu=99999999999", "alice", None, None, ["mtu", INT4_MAX]),
    ("GET", f"{N}/ports?limit=-1", "alice", None, None, ["limit", "minimum of 0"]),
    ("GET", "/image/v2/images?limit=99999999999", "alice", None, None, ["limit", INT4_MAX]),
    ("POST", f"{N}/networks", "alice", {"network": {"mtu": 99999999999}}, None, ["network/mtu", "9000"]),
    ("POST", f"{C}/flavors", "admin", {"flavor": {"name": "f", "ram": 99999999999, "vcpus": 1, "disk": 1}}, None,
     ["flavor/ram", INT4_MAX]),
    ("POST", f"{C}/flavors", "admin", {"flavor": {"name": "f", "ram": "9999999999", "vcpus": 1, "disk": 1}}, None,
     ["flavor/ram", INT4_MAX]),
    ("POST", f"{C}/flavors", "admin", {"flavor": {"name": "f", "ram": 1, "vcpus": 1, "disk": 1, "swap": BIG}}, None,
     ["flavor/swap", "maxLength 10"]),
    ("POST", f"{C}/flavors", "admin", {"flavor": {"name": "f", "ram": 1, "vcpus": 1, "disk": 1, "rxtx_factor": 1e308}},
     None, ["flavor/rxtx_factor", "3.4028234e+38"]),
    ("POST", f"{C}/flavors", "admin", {"flavor": {"name": "f", "ram": 1, "vcpus": 1, "disk": 1, "rxtx_factor": "1e99"}},
     None, ["flavor/rxtx_factor"]),
    ("POST", f"{C}/flavors", "admin", b'{"flavor": {"name": "f", "ram": 1, "vcpus": 1, "disk": 1, "rxtx_factor": NaN}}',
     None, ["Malformed request body", "column"]),
    ("POST", f"{C}/flavors", "admin", b'{"flavor": {"name": "f", "ram": 1, "vcpus": 1, "disk": Infinity}}', None,
     ["Malformed request body"]),
    ("POST", f"{C}/servers", "alice", {"server": {"name": "s", "flavorRef": "1", "imageRef": "x", "min_count": BIG}},
     None, ["server/min_count", "maxLength 10"]),
    ("POST", f"{C}/servers", "alice", {"server": {"name": "s", "flavorRef": "1", "imageRef": "x",
                                                  "max_count": 99999999999}}, None, ["server/max_count", INT4_MAX]),
    ("POST", f"{C}/servers/x/action", "alice", {"os-getConsoleOutput": {"length": BIG}}, None,
     ["os-getConsoleOutput/length"]),
    ("POST", f"{C}/servers/x/action", "alice", {"os-getConsoleOutput": {"length": 99999999999}}, None,
     ["os-getConsoleOutput/length"]),
    ("GET", f"{C}/servers", "alice", None, {"OpenStack-API-Version": "compute 2." + "1" * 5000},
     ["API version string", "at most 3 digits"]),
    ("GET", f"{C}/servers", "alice", None, {"X-OpenStack-Nova-API-Version": "2." + "9" * 5000}, ["API version"]),
    ("GET", f"{C}/servers", "alice", None, {"OpenStack-API-Version": "volume " + "9" * 5000},
     ["header OpenStack-API-Version", "maxLength 255"]),
    ("POST", f"{C}/os-server-groups", "alice", {"server_group": {"name": "g", "policy": "anti-affinity",
                                                                 "rules": {"max_server_per_host": BIG}}}, None,
     ["max_server_per_host", "maxLength"]),
    ("POST", "/image/v2/images", "alice", {"name": "i", "min_ram": 99999999999}, None, ["min_ram", INT4_MAX]),
    ("POST", "/identity/v3/users", "admin", {"user": {"name": "u", "password": "p", "default_project_id": ""}}, None,
     ["user/default_project_id", "minLength 1"]),  # found by schemathesis: was a foreign-key 500
    ("POST", f"{N}/subnets", "alice", {"subnet": {"network_id": "n", "cidr": "1" * 5000}}, None,
     ["subnet/cidr", "maxLength 64"]),
]  # fmt: skip


@pytest.mark.parametrize(("method", "path", "who", "body", "headers", "words"), CASES)
async def test_hostile_input_is_a_named_4xx(app_api: Api, method, path, who, body, headers, words):
    before = _data_errors()
    raw = body if isinstance(body, bytes) else None
    status, reply = await _send(app_api, method, path, who, raw=raw, body=None if raw else body, headers=headers)
    assert status == 400, reply[:500]
    message = _shape(path, json.loads(reply))
    for word in words:
        assert word in message, message
    assert len(reply) < 2000, "the message echoes too much"
    assert _data_errors() == before, "the database, not the schema, refused the value"


async def test_a_10_mib_value_is_not_echoed(app_api: Api):
    huge = "x" * (10 * 1024 * 1024)
    for path, body in ((f"{C}/servers", {"server": {"name": huge, "flavorRef": "1"}}),
                       (f"{N}/networks", {"network": {"name": huge}}),
                       (f"{C}/os-keypairs", {"keypair": {"name": "k", "public_key": huge}})):  # fmt: skip
        status, reply = await _send(app_api, "POST", path, "alice", body=body)
        assert status == 400 and len(reply) < 1000, (status, len(reply))
        assert "10485760 characters" in _shape(path, json.loads(reply))


async def test_community_images_as_a_member(app_api: Api):
    status, reply = await _send(app_api, "GET", "/image/v2/images?visibility=community", "alice")
    assert status == 200, reply
    assert json.loads(reply)["images"] == []


async def test_the_last_resort_mapping_counts_and_logs(api_dsn, tmp_path, caplog):
    """Forced, on a route added for the test: values the real PostgreSQL refuses (server side, out of int4) and
    asyncpg cannot encode (client side) are a 400 in the error shape, logged at WARNING and counted."""
    from aiohttp.test_utils import TestClient, TestServer

    from common.db.pool import Database
    from services.api.app import DB, public
    from tests.functional.network.conftest import _NoTransport, make_conf

    @public
    async def overflow(request: web.Request) -> web.Response:
        client_side = request.query.get("side") == "client"
        sql, arg = ("SELECT $1::int4", 2**40) if client_side else ("SELECT $1::text::int4", "9" * 12)
        await request.app[DB].run(lambda conn: conn.fetchval(sql, arg))
        return web.Response(text="not reached")

    conf = make_conf(api_dsn, state_path=str(tmp_path))
    db = await Database.connect(conf)
    app = create_app(conf, db, _NoTransport())
    app.router.add_get("/test-only/overflow", overflow)
    client = TestClient(TestServer(app))
    await client.start_server()
    try:
        caplog.set_level(logging.WARNING, logger="services.api.app")
        before = _data_errors()
        for side in ("server", "client"):
            resp = await client.get("/test-only/overflow", params={"side": side})
            body = await resp.json()
            assert resp.status == 400 and "cannot be stored" in body["badRequest"]["message"], body
        assert _data_errors() == before + 2
        warnings = [r for r in caplog.records if "the database refused a value" in r.getMessage()]
        assert len(warnings) == 2 and all(r.levelno == logging.WARNING for r in warnings)
        assert asyncpg.DataError  # the class the middleware maps (NumericValueOutOfRangeError, DataError)
    finally:
        await client.close()
        await db.close()
