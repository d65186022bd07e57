"""Consumers: map messages onto an endpoint's async methods; ack only after the handler finished."""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import logging
import time
from typing import TYPE_CHECKING, Any

import aio_pika
import aiormq
import asyncpg
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage, AbstractQueue

from common import exceptions
from common.db.pool import RETRYABLE as DB_RETRYABLE
from common.rpc import envelope

if TYPE_CHECKING:
    from common.rpc.transport import Transport

__all__ = ["dlq_name", "redelivered", "serve_fanout", "serve_topic"]

LOG = logging.getLogger(__name__)

# A cast whose handler failed on one of these met an outage (database restarting, broker failing over), not a
# fault of the message: it goes back to its queue to run again (handlers are idempotent) rather than being
# acked and lost. The quorum queue's delivery limit still dead-letters a message that keeps failing.
TRANSIENT = (exceptions.ServiceUnavailable, asyncpg.PostgresConnectionError, *DB_RETRYABLE)
REQUEUE_DELAY = 1.0
_REDELIVERED: contextvars.ContextVar[bool] = contextvars.ContextVar("rpc_redelivered", default=False)


def redelivered() -> bool:
    """True inside a handler whose message the broker delivered before (a consumer died or lost its channel
    before acking it): the first delivery may have done part of the work."""
    return _REDELIVERED.get()


# What acking (or replying) on a channel whose connection died raises.
_CHANNEL_GONE = (
    aio_pika.exceptions.AMQPConnectionError,
    aio_pika.exceptions.ChannelInvalidStateError,
    aiormq.exceptions.ChannelClosed,
    aiormq.exceptions.ConnectionClosed,
    ConnectionError,
    RuntimeError,
)


def dlq_name(topic: str) -> str:
    return f"{topic}.dlq"


def work_queue_arguments(topic: str, delivery_limit: int) -> dict[str, Any]:
    from common.rpc.transport import DLX

    return {
        "x-queue-type": "quorum",
        "x-delivery-limit": delivery_limit,
        "x-dead-letter-exchange": DLX,
        "x-dead-letter-routing-key": dlq_name(topic),
    }


class Dispatcher:
    """Runs one message against ``endpoint``. Public async methods are the callable surface."""

    def __init__(self, transport: Transport, endpoint: object, label: str, *, acks: bool = True) -> None:
        self.transport = transport
        self.endpoint = endpoint
        self.label = label
        self.acks = acks  # False: deliveries come unacked (no_ack) and are never settled here
        self.inflight: set[asyncio.Task] = set()

    def _method(self, name: str) -> Any:
        if name.startswith("_"):
            return None
        fn = getattr(self.endpoint, name, None)
        return fn if fn is not None and inspect.iscoroutinefunction(fn) else None

    async def on_message(self, message: AbstractIncomingMessage) -> None:
        """Handle one delivery. When the connection dies aiormq cancels this callback mid-way; the message was not
        acked, so the broker delivers it again and ``redelivered()`` tells the handler that an earlier copy may
        have done part of the work (handlers are idempotent: they finish what that copy left, never redo it).

        Handlers are deliberately not shielded from that cancellation: a copy running on after its message was
        given to another consumer raced the redelivered one (measured: a compute build whose first copy failed
        and was rescheduled while the redelivered copy built the same instance again, two guests for one).
        """
        task = asyncio.current_task()
        if task is not None:
            self.inflight.add(task)
        _REDELIVERED.set(bool(message.redelivered))  # this callback task's own context
        try:
            await self._handle(message)
        except _CHANNEL_GONE as e:
            LOG.info("%s: could not settle message %s (%s); it comes again", self.label, message.message_id, e)
        finally:
            if task is not None:
                self.inflight.discard(task)

    async def _handle(self, message: AbstractIncomingMessage) -> None:
        try:
            req = envelope.decode_request(message.body, message.headers)
            fn = self._method(req.method)
            if fn is None:
                raise envelope.MalformedMessage(f"{self.label} has no method {req.method!r}")
        except envelope.MalformedMessage as e:
            LOG.error("dead-lettering message %s on %s: %s", message.message_id, self.label, e)
            if message.reply_to:
                await self._reply(message, envelope.encode_error(exceptions.BadRequest(str(e))))
            if self.acks:
                await message.reject(requeue=False)
            return
        token = req.ctx.bind()
        started = time.monotonic()
        try:
            try:
                result = await fn(req.ctx, **req.args)
                reply = envelope.encode_result(result)
            except TRANSIENT as e:
                if message.reply_to:
                    # The caller sees ServiceUnavailable (retryable), not a database driver's class name.
                    LOG.warning("%s.%s failed: %s", self.label, req.method, e)
                    if not isinstance(e, exceptions.StratusError):
                        e = exceptions.ServiceUnavailable(f"{self.label}.{req.method}: {type(e).__name__}: {e}")
                    reply = envelope.encode_error(e)
                elif not self.acks:
                    LOG.warning("%s.%s met an outage (%s); dropped (the next one heals it)", self.label, req.method, e)
                    return
                else:
                    LOG.warning("%s.%s met an outage (%s); requeueing it", self.label, req.method, e)
                    await asyncio.sleep(REQUEUE_DELAY)
                    await message.nack(requeue=True)
                    return
            except TypeError as e:
                # Wrong arguments for the method: the message is at fault, not the service.
                if message.reply_to is None and "argument" in str(e):
                    LOG.error("dead-lettering %s.%s: %s", self.label, req.method, e)
                    if self.acks:
                        await message.reject(requeue=False)
                    return
                LOG.exception("%s.%s failed", self.label, req.method)
                reply = envelope.encode_error(e)
            except exceptions.StratusError as e:
                LOG.warning("%s.%s failed: %s", self.label, req.method, e.message)
                reply = envelope.encode_error(e)
            except Exception as e:
                LOG.exception("%s.%s failed", self.label, req.method)
                reply = envelope.encode_error(e)
            # Ack first, then answer: a reply can kill our connection (RabbitMQ 3.10 closes it with INTERNAL_ERROR
            # when the caller's node is gone), and an unacked request would then come back, fail the same way
            # and end in the dead-letter queue. A caller that misses its reply fails or times out on its own.
            if self.acks:
                await message.ack()
            if message.reply_to:
                await self._reply(message, reply)
            LOG.debug("%s.%s done in %.1f ms", self.label, req.method, (time.monotonic() - started) * 1000)
        finally:
            token.var.reset(token)

    async def _reply(self, message: AbstractIncomingMessage, body: bytes) -> None:
        try:
            await self.transport.publish(
                body,
                {},
                message.reply_to or "",
                exchange="",
                mandatory=False,
                persistent=False,
                correlation_id=message.correlation_id,
                once=True,
            )
        except exceptions.StratusError:
            LOG.warning("could not send the reply on %s (caller gone?)", self.label)


async def serve_topic(transport: Transport, topic: str, endpoint: object) -> Dispatcher:
    """Consume the quorum work queue ``topic`` (competing consumers) with a dead-letter queue beside it."""
    from common.rpc.transport import DLX, EXCHANGE, _ConsumerSpec

    dispatcher = Dispatcher(transport, endpoint, topic)
    msg = transport.conf.messaging

    async def setup(channel: AbstractChannel) -> tuple[AbstractQueue, str]:
        exchange = await channel.declare_exchange(EXCHANGE, aio_pika.ExchangeType.TOPIC, durable=True)
        dlx = await channel.declare_exchange(DLX, aio_pika.ExchangeType.DIRECT, durable=True)
        dlq = await channel.declare_queue(dlq_name(topic), durable=True, arguments={"x-queue-type": "quorum"})
        await dlq.bind(dlx, dlq_name(topic))
        queue = await channel.declare_queue(
            topic, durable=True, arguments=work_queue_arguments(topic, msg.delivery_limit)
        )
        await queue.bind(exchange, topic)
        return queue, await queue.consume(dispatcher.on_message)

    await transport.add_consumer(_ConsumerSpec(topic, setup, msg.prefetch_count, dispatcher))
    return dispatcher


async def serve_fanout(transport: Transport, exchange_name: str, endpoint: object) -> Dispatcher:
    """Bind an exclusive, auto-delete queue of this process to the fanout exchange ``exchange_name``, consumed
    without acks: fanout data is periodic (``Transport.broadcast``), so a delivery lost with this process's
    connection costs nothing until the next one."""
    from common.rpc.transport import _ConsumerSpec

    dispatcher = Dispatcher(transport, endpoint, exchange_name, acks=False)

    async def setup(channel: AbstractChannel) -> tuple[AbstractQueue, str]:
        exchange = await channel.declare_exchange(exchange_name, aio_pika.ExchangeType.FANOUT, durable=True)
        queue = await channel.declare_queue("", exclusive=True, auto_delete=True)
        await queue.bind(exchange)
        return queue, await queue.consume(dispatcher.on_message, no_ack=True)

    await transport.add_consumer(_ConsumerSpec(f"fanout:{exchange_name}", setup, 256, dispatcher))
    return dispatcher
