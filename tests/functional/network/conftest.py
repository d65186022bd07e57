"""Fixtures for the network service's functional tests: a migrated private database per test, the service's
config and ``Database``, and the API application on an in-process test server."""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import pytest_asyncio
from aiohttp.test_utils import TestClient, TestServer

from common.config import new_conf
from common.db import migrate
from common.db.pool import Database
from tests.fixtures.postgres import PostgresServer


async def server_row(conn: Any, instance_id: str, project_id: str) -> None:
    """A bare ``instances`` row (idempotent): lookups by device only take ports of a server of their project."""
    await conn.execute(
        "INSERT INTO instances (id, project_id, user_id, name, hostname, flavor_id, flavor, vm_state)"
        " VALUES ($1, $2, 'u', $1, $1, '1', '{}', 'building') ON CONFLICT (id) DO NOTHING",
        instance_id,
        project_id,
    )


ADMIN_PROJECT = "p-admin"
PROJECT_A = "p-alice"
PROJECT_B = "p-bob"


@pytest.fixture(scope="session")
def network_db_template(postgres: PostgresServer) -> str:
    """A template database migrated once per session with ``common.db.migrate.sync``."""
    name = "network_tmpl"
    postgres.create_template(name, migrate.sync)
    return name


@pytest.fixture
def net_dsn(postgres: PostgresServer, network_db_template: str) -> Iterator[str]:
    name = f"n_{secrets.token_hex(6)}"
    dsn = postgres.create_database(name, template=network_db_template)
    try:
        yield dsn
    finally:
        if postgres.running:
            postgres.drop_database(name)


def make_conf(dsn: str, **defaults: Any):
    conf = new_conf()
    conf([], project="stratus", default_config_files=[])
    conf.set_override("connection", dsn, "database")
    conf.set_override("max_pool_size", 30, "database")
    conf.set_override("retry_timeout", 5.0, "database")
    conf.set_override("token_secret", "network-functional-tests-signing-key", "api")
    for key, value in defaults.items():
        conf.set_override(key, value)
    return conf


@pytest.fixture
def net_conf(net_dsn: str):
    return make_conf(net_dsn)


@pytest_asyncio.fixture
async def db(net_conf) -> AsyncIterator[Database]:
    database = await Database.connect(net_conf)
    try:
        yield database
    finally:
        await database.close()


class Api:
    """An HTTP client on the API app with tokens for an admin and two ordinary projects; paths are under
    ``prefix``."""

    def __init__(self, client: TestClient, tokens: dict[str, str], prefix: str = "/network/v2.0") -> None:
        self.client = client
        self.tokens = tokens
        self.prefix = prefix

    async def request(self, method: str, path: str, who: str = "alice", **kw: Any) -> tuple[int, Any]:
        headers = {"X-Auth-Token": self.tokens[who]} if who else {}
        resp = await self.client.request(method, f"{self.prefix}{path}", headers=headers, **kw)
        body = await resp.json() if resp.content_type == "application/json" else await resp.text()
        return resp.status, body

    async def get(self, path: str, who: str = "alice", **kw: Any) -> tuple[int, Any]:
        return await self.request("GET", path, who, **kw)

    async def post(self, path: str, body: Any, who: str = "alice") -> tuple[int, Any]:
        return await self.request("POST", path, who, json=body)

    async def put(self, path: str, body: Any, who: str = "alice") -> tuple[int, Any]:
        return await self.request("PUT", path, who, json=body)

    async def delete(self, path: str, who: str = "alice") -> tuple[int, Any]:
        return await self.request("DELETE", path, who)


class _NoTransport:
    """Stands in for the broker transport: the Network API never sends RPC."""

    connected = True

    def client(self) -> None:
        return None


@contextlib.asynccontextmanager
async def serve_api(conf, db: Database, transport: Any) -> AsyncIterator[Api]:
    """The real application (``create_app``) with every route and the shared middleware, in process, on
    ``transport``; tokens for an admin and two ordinary projects."""
    from services.api.app import SIGNER, create_app

    app = create_app(conf, db, transport)
    signer = app[SIGNER]
    tokens = {}
    for who, project, roles in (
        ("admin", ADMIN_PROJECT, ["admin", "member"]),
        ("alice", PROJECT_A, ["member"]),
        ("bob", PROJECT_B, ["member"]),
    ):
        tokens[who], _ = signer.issue(
            user_id=f"u-{who}", user_name=who, project_id=project, project_name=project, roles=roles
        )
    client = TestClient(TestServer(app))
    await client.start_server()
    try:
        yield Api(client, tokens)
    finally:
        await client.close()


@pytest_asyncio.fixture
async def api(net_conf, db: Database) -> AsyncIterator[Api]:
    """``serve_api`` without a broker: the Network API never sends RPC."""
    async with serve_api(net_conf, db, _NoTransport()) as a:
        yield a
