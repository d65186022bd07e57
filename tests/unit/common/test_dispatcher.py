"""The dispatcher's ack/requeue contract, with a fake message and transport (no broker)."""

from __future__ import annotations

import asyncpg
import pytest

from common import exceptions
from common.context import RequestContext
from common.rpc import envelope, server


class FakeMessage:
    def __init__(self, method: str, reply_to: str | None = None, *, batch: list[str] | None = None) -> None:
        """A request for ``method``, or with ``batch`` one message carrying a request for each method named."""
        self.body, self.headers = envelope.encode_request(method, {}, RequestContext(), "test")
        if batch is not None:
            parts = [
                envelope.encode_request(m, {}, RequestContext(request_id=f"req-{i}"), "test")
                for i, m in enumerate(batch)
            ]
            self.body, self.headers = envelope.encode_batch(parts, "test")
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
        self.published: list[tuple[bytes, dict, str, dict]] = []

    async def publish(self, body: bytes, headers, routing_key, **kw) -> None:
        self.replies.append(body)
        self.published.append((body, headers, routing_key, kw))


class Endpoint:
    def __init__(self) -> None:
        self.ran: list[str] = []

    async def ok(self, ctx) -> None:
        self.ran.append(ctx.request_id)

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


async def test_a_batch_runs_every_request_with_its_own_context_and_is_acked_once():
    msg, endpoint = FakeMessage("", batch=["ok", "ok", "ok"]), Endpoint()
    await server.Dispatcher(FakeTransport(), endpoint, "t").on_message(msg)
    assert sorted(endpoint.ran) == ["req-0", "req-1", "req-2"]
    assert msg.done == ["ack"]


async def test_a_batch_with_one_request_that_meets_an_outage_comes_again_whole():
    msg, endpoint = FakeMessage("", batch=["ok", "db_down", "ok"]), Endpoint()
    await server.Dispatcher(FakeTransport(), endpoint, "t").on_message(msg)
    assert sorted(endpoint.ran) == ["req-0", "req-2"]  # they ran; their redelivered copies find the work done
    assert msg.done == ["nack requeue=True"]


async def test_a_malformed_request_of_a_batch_is_dead_lettered_alone():
    msg, endpoint, transport = FakeMessage("", batch=["ok", "no_such_method", "ok"]), Endpoint(), FakeTransport()
    await server.Dispatcher(transport, endpoint, "t").on_message(msg)
    assert sorted(endpoint.ran) == ["req-0", "req-2"]
    assert msg.done == ["ack"]
    [(body, headers, routing_key, kw)] = transport.published
    assert (routing_key, kw["exchange"]) == ("t.dlq", "")  # straight into the topic's dead-letter queue
    req = envelope.decode_request(body, headers)  # as a message of its own, context kept
    assert (req.method, req.ctx.request_id) == ("no_such_method", "req-1")


async def test_a_batch_that_cannot_be_read_is_dead_lettered():
    msg = FakeMessage("ok")
    msg.headers = {"batch": 2}
    msg.body = b'{"batch": "not a list"}'
    await server.Dispatcher(FakeTransport(), Endpoint(), "t").on_message(msg)
    assert msg.done == ["reject requeue=False"]
