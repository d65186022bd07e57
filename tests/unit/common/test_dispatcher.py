"""The dispatcher's ack/requeue contract, with a fake message and transport (no broker)."""

from __future__ import annotations

import asyncpg
import pytest

from common import exceptions
from common.context import RequestContext
from common.rpc import envelope, server


class FakeMessage:
    def __init__(self, method: str, reply_to: str | None = None) -> None:
        self.body, self.headers = envelope.encode_request(method, {}, RequestContext(), "test")
        self.reply_to = reply_to
        self.correlation_id = "c1"
        self.message_id = "m1"
        self.redelivered = False
        self.done: list[str] = []

    async def ack(self) -> None:
        self.done.append("ack")

    async def nack(self, requeue: bool = True) -> None:
        self.done.append(f"nack requeue={requeue}")

    async def reject(self, requeue: bool = False) -> None:
        self.done.append(f"reject requeue={requeue}")


class FakeTransport:
    def __init__(self) -> None:
        self.replies: list[bytes] = []

    async def publish(self, body: bytes, headers, routing_key, **kw) -> None:
        self.replies.append(body)


class Endpoint:
    async def db_down(self, ctx) -> None:
        raise asyncpg.exceptions.CannotConnectNowError("the database system is starting up")

    async def broker_down(self, ctx) -> None:
        raise exceptions.ServiceUnavailable("no broker node confirmed it")

    async def bug(self, ctx) -> None:
        raise ValueError("a real bug")


@pytest.fixture(autouse=True)
def _no_delay(monkeypatch):
    monkeypatch.setattr(server, "REQUEUE_DELAY", 0)


@pytest.mark.parametrize("method", ["db_down", "broker_down"])
async def test_a_cast_that_meets_an_outage_is_requeued_not_lost(method):
    msg = FakeMessage(method)
    await server.Dispatcher(FakeTransport(), Endpoint(), "t").on_message(msg)
    assert msg.done == ["nack requeue=True"]


async def test_a_cast_that_fails_for_another_reason_is_acked():
    msg = FakeMessage("bug")
    await server.Dispatcher(FakeTransport(), Endpoint(), "t").on_message(msg)
    assert msg.done == ["ack"]


async def test_a_call_that_meets_a_database_outage_answers_service_unavailable():
    msg, transport = FakeMessage("db_down", reply_to="amq.rabbitmq.reply-to"), FakeTransport()
    await server.Dispatcher(transport, Endpoint(), "t").on_message(msg)
    assert msg.done == ["ack"]
    with pytest.raises(exceptions.ServiceUnavailable, match="CannotConnectNowError"):
        envelope.decode_reply(transport.replies[0])
