"""The API application in process on a real PostgreSQL (migrated once per session), with tokens for an admin and
two members; no broker: every request these tests send is refused, or answered, before any RPC."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Iterator

import pytest
import pytest_asyncio

from common.db.pool import Database
from tests.fixtures.postgres import PostgresServer
from tests.functional.network.conftest import Api, _NoTransport, make_conf, serve_api


@pytest.fixture(scope="session")
def api_db_template(postgres: PostgresServer) -> str:
    from common.db import migrate

    name = "api_tmpl"
    postgres.create_template(name, migrate.sync)
    return name


@pytest.fixture
def api_dsn(postgres: PostgresServer, api_db_template: str) -> Iterator[str]:
    name = f"a_{secrets.token_hex(6)}"
    dsn = postgres.create_database(name, template=api_db_template)
    try:
        yield dsn
    finally:
        if postgres.running:
            postgres.drop_database(name)


@pytest_asyncio.fixture
async def app_api(api_dsn: str, tmp_path) -> AsyncIterator[Api]:
    """An ``Api`` client (paths from the root: its prefix is empty) on the whole application."""
    conf = make_conf(api_dsn, state_path=str(tmp_path))
    db = await Database.connect(conf)
    try:
        async with serve_api(conf, db, _NoTransport()) as api:
            api.prefix = ""
            yield api
    finally:
        await db.close()
