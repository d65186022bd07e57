"""Consumers: map messages onto an endpoint's async methods; ack only after the handler finished."""

from __future__ import annotations

import asyncio
import contextvars
import enum
import inspect
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import aio_pika
import aiormq
import asyncpg
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage, AbstractQueue

from common import exceptions, jsonutils
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
_FANOUT_PREFETCH = 256
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


class _Outcome(enum.Enum):
    DONE = "done"  # settle it (ack) and send the reply, if one is wanted
    REQUEUE = "requeue"  # met an outage: back to its queue to run again
    DEAD_LETTER = "dead-letter"  # the message is at fault: to the dead-letter queue


class Dispatcher:
    """Runs one message against ``endpoint``. Public async methods are the callable surface."""

    def __init__(
        self, transport: Transport, endpoint: object, label: str, *, acks: bool = True, slots: int = 32
    ) -> None:
        """``slots``: how many requests of batch messages run at once (a consumer's prefetch bounds messages,
        this bounds what they carry)."""
        self.transport = transport
        self.endpoint = endpoint
        self.label = label
        self.acks = acks  # False: deliveries come unacked (no_ack) and are never settled here
        self.inflight: set[asyncio.Task] = set()
        self._slots = asyncio.Semaphore(slots)

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
            if envelope.is_batch(message.headers):
                await self._handle_batch(message)
            else:
                await self._handle(message)
        except _CHANNEL_GONE as e:
            LOG.info("%s: could not settle message %s (%s); it comes again", self.label, message.message_id, e)
        finally:
            if task is not None:
                self.inflight.discard(task)

    def _request(self, decode: Callable[[], envelope.Request]) -> tuple[envelope.Request, Any]:
        """The request ``decode`` reads and the endpoint method for it; ``MalformedMessage`` when there is none."""
        req = decode()
        fn = self._method(req.method)
        if fn is None:
            raise envelope.MalformedMessage(f"{self.label} has no method {req.method!r}")
        return req, fn

    async def _handle(self, message: AbstractIncomingMessage) -> None:
        try:
            req, fn = self._request(lambda: envelope.decode_request(message.body, message.headers))
        except envelope.MalformedMessage as e:
            LOG.error("dead-lettering message %s on %s: %s", message.message_id, self.label, e)
            if message.reply_to:
                await self._reply(message, envelope.encode_error(exceptions.BadRequest(str(e))))
            if self.acks:
                await message.reject(requeue=False)
            return
        outcome, reply = await self._invoke(fn, req, replying=message.reply_to is not None)
        if outcome is _Outcome.REQUEUE:
            await asyncio.sleep(REQUEUE_DELAY)
            await message.nack(requeue=True)
            return
        if outcome is _Outcome.DEAD_LETTER:
            if self.acks:
                await message.reject(requeue=False)
            return
        # Ack first, then answer: a reply can kill our connection (RabbitMQ 3.10 closes it with INTERNAL_ERROR
        # when the caller's node is gone), and an unacked request would then come back, fail the same way
        # and end in the dead-letter queue. A caller that misses its reply fails or times out on its own.
        if self.acks:
            await message.ack()
        if message.reply_to and reply is not None:
            await self._reply(message, reply)

    async def _handle_batch(self, message: AbstractIncomingMessage) -> None:
        """A batch of casts (``envelope.encode_batch``): each runs as if it came alone, at most ``slots`` at once.
        A malformed one goes to the dead-letter queue by itself; when one meets an outage the whole batch comes
        again (the others are idempotent and find their work done)."""
        try:
            items = envelope.decode_batch(message.body)
        except envelope.MalformedMessage as e:
            LOG.error("dead-lettering batch %s on %s: %s", message.message_id, self.label, e)
            if self.acks:
                await message.reject(requeue=False)
            return
        outcomes = await asyncio.gather(*(self._batch_item(message, data, headers) for data, headers in items))
        if _Outcome.REQUEUE in outcomes:
            await asyncio.sleep(REQUEUE_DELAY)
            await message.nack(requeue=True)
        elif self.acks:
            await message.ack()

    async def _batch_item(self, message: AbstractIncomingMessage, data: Any, headers: dict[str, Any]) -> _Outcome:
        try:
            req, fn = self._request(lambda: envelope.request_from(data, headers))
        except envelope.MalformedMessage as e:
            LOG.error("dead-lettering a request of batch %s on %s: %s", message.message_id, self.label, e)
            return await self._dead_letter(data, headers)
        async with self._slots:
            outcome, _ = await self._invoke(fn, req, replying=False)
        if outcome is _Outcome.DEAD_LETTER:
            return await self._dead_letter(data, headers)
        return outcome

    async def _dead_letter(self, data: Any, headers: dict[str, Any]) -> _Outcome:
        """Put one request of a batch into this topic's dead-letter queue as a message of its own."""
        if not self.acks:
            return _Outcome.DONE  # fanout data: dropped, the next report heals it
        try:
            body = jsonutils.dumps(data)
            await self.transport.publish(body, headers, dlq_name(self.label), exchange="")
        except exceptions.StratusError as e:
            LOG.warning("%s: could not dead-letter a request (%s); the batch comes again", self.label, e)
            return _Outcome.REQUEUE
        return _Outcome.DONE

    async def _invoke(self, fn: Any, req: envelope.Request, *, replying: bool) -> tuple[_Outcome, bytes | None]:
        """Run the handler; what to do with its message, and the reply to send when one is wanted."""
        token = req.ctx.bind()
        started = time.monotonic()
        try:
            result = await fn(req.ctx, **req.args)
            return _Outcome.DONE, envelope.encode_result(result)
        except TRANSIENT as e:
            if replying:
                # The caller sees ServiceUnavailable (retryable), not a database driver's class name.
                LOG.warning("%s.%s failed: %s", self.label, req.method, e)
                if not isinstance(e, exceptions.StratusError):
                    e = exceptions.ServiceUnavailable(f"{self.label}.{req.method}: {type(e).__name__}: {e}")
                return _Outcome.DONE, envelope.encode_error(e)
            if not self.acks:
                LOG.warning("%s.%s met an outage (%s); dropped (the next one heals it)", self.label, req.method, e)
                return _Outcome.DONE, None
            LOG.warning("%s.%s met an outage (%s); requeueing it", self.label, req.method, e)
            return _Outcome.REQUEUE, None
        except TypeError as e:
            # Wrong arguments for the method: the message is at fault, not the service.
            if not replying and "argument" in str(e):
                LOG.error("dead-lettering %s.%s: %s", self.label, req.method, e)
                return _Outcome.DEAD_LETTER, None
            LOG.exception("%s.%s failed", self.label, req.method)
            return _Outcome.DONE, envelope.encode_error(e)
        except exceptions.StratusError as e:
            LOG.warning("%s.%s failed: %s", self.label, req.method, e.message)
            return _Outcome.DONE, envelope.encode_error(e)
        except Exception as e:
            LOG.exception("%s.%s failed", self.label, req.method)
            return _Outcome.DONE, envelope.encode_error(e)
        finally:
            LOG.debug("%s.%s done in %.1f ms", self.label, req.method, (time.monotonic() - started) * 1000)
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

    msg = transport.conf.messaging
    dispatcher = Dispatcher(transport, endpoint, topic, slots=msg.prefetch_count)

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

    dispatcher = Dispatcher(transport, endpoint, exchange_name, acks=False, slots=_FANOUT_PREFETCH)

    async def setup(channel: AbstractChannel) -> tuple[AbstractQueue, str]:
        exchange = await channel.declare_exchange(exchange_name, aio_pika.ExchangeType.FANOUT, durable=True)
        queue = await channel.declare_queue("", exclusive=True, auto_delete=True)
        await queue.bind(exchange)
        return queue, await queue.consume(dispatcher.on_message, no_ack=True)

    await transport.add_consumer(_ConsumerSpec(f"fanout:{exchange_name}", setup, _FANOUT_PREFETCH, dispatcher))
    return dispatcher
