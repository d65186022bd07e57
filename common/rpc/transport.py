"""Broker transport: one supervised AMQP connection that fails over across a list of nodes.

aio-pika's robust connection retries a single URL only, so the node list, the ordering policy and the
re-declaration after a reconnect live here. Everything that must survive a reconnect (queues, consumers) is
registered as a *spec* and re-applied on every new connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import uuid
import zlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import aio_pika
import aiormq
import tenacity
from aio_pika.abc import (
    AbstractChannel,
    AbstractConnection,
    AbstractExchange,
    AbstractIncomingMessage,
    AbstractQueue,
)
from oslo_config import cfg
from yarl import URL

from common import exceptions
from common.rpc import envelope

if TYPE_CHECKING:
    from common.rpc.client import RpcClient

__all__ = ["EXCHANGE", "Transport", "order_nodes", "parse_transport_url"]

LOG = logging.getLogger(__name__)
EXCHANGE = "stratus"
DLX = "stratus.dlx"
REPLY_TO = "amq.rabbitmq.reply-to"
_BATCH_MAX = 100  # requests in one coalesced message

# Failures of a publish that a new connection (or channel) can cure.
_TRANSIENT = (
    aio_pika.exceptions.AMQPConnectionError,
    aio_pika.exceptions.ChannelInvalidStateError,
    aiormq.exceptions.ChannelClosed,
    aiormq.exceptions.ConnectionClosed,
    ConnectionError,
    RuntimeError,  # aiormq: "Connection closed" / writer gone
)


def _transient(e: BaseException) -> bool:
    """A publish failure that a lost node or channel explains, worth waiting for the broker and publishing again.
    Besides ``_TRANSIENT`` and timeouts: aiormq rejects a confirm still pending when its channel closes without a
    reason with a bare ``Exception`` (its ``FutureStore.reject_all``), which a node kill can produce."""
    return isinstance(e, (*_TRANSIENT, TimeoutError)) or type(e) is Exception


def parse_transport_url(url: str) -> list[str]:
    """``amqp://u:p@h1:1,h2:2/vh`` → one full URL per node (credentials and vhost shared)."""
    scheme, rest = url.split("://", 1)
    creds = ""
    if "@" in rest:
        creds, rest = rest.rsplit("@", 1)
        creds += "@"
    hosts, _, path = rest.partition("/")
    return [f"{scheme}://{creds}{h.strip()}/{path}" for h in hosts.split(",") if h.strip()]


def order_nodes(nodes: list[str], strategy: str, seed: str) -> list[str]:
    """Order broker nodes per process. The first one is this process's preferred node."""
    if strategy == "static" or len(nodes) < 2:
        return list(nodes)
    if strategy == "shuffle":
        shuffled = list(nodes)
        random.shuffle(shuffled)
        return shuffled
    offset = zlib.crc32(seed.encode()) % len(nodes)  # roundrobin: stable per process, spread across processes
    return nodes[offset:] + nodes[:offset]


def node_name(url: str) -> str:
    u = URL(url)
    return f"{u.host}:{u.port}"


def _settle(futures: list[asyncio.Future[None]], error: Exception | None) -> None:
    for fut in futures:
        if fut.done():
            continue  # its caller was cancelled
        if error is None:
            fut.set_result(None)
        else:
            fut.set_exception(error)


class _NoNodeReachable(Exception):
    pass


@dataclass
class _ConsumerSpec:
    """A queue and its consumer, re-created on every connection."""

    name: str
    setup: Callable[[AbstractChannel], Awaitable[tuple[AbstractQueue, str]]]
    prefetch: int
    dispatcher: Any


class Transport:
    """Owns the broker connection for one process. Create with ``await Transport.connect(conf, service)``."""

    def __init__(self, conf: cfg.ConfigOpts, service: str, nodes: list[str]) -> None:
        self.conf = conf
        self.service = service
        self.sender = f"{service}@{conf.host}"
        self.nodes = nodes
        self.node_index = 0
        self._connection: AbstractConnection | None = None
        self._pub_channel: AbstractChannel | None = None
        self._exchange: AbstractExchange | None = None
        self._broadcast_channel: AbstractChannel | None = None
        self._fanouts: dict[str, AbstractExchange] = {}
        self._consumers: list[_ConsumerSpec] = []
        self._consumer_channels: list[tuple[AbstractChannel, AbstractQueue, str]] = []
        self._pending: dict[str, asyncio.Future] = {}
        self._connected = asyncio.Event()
        self._lost = asyncio.Event()
        self._closing = False
        self._supervisor: asyncio.Task | None = None
        self._preferred: asyncio.Task | None = None
        self._nacks = 0
        self._setup_lock = asyncio.Lock()
        # Coalescing (cast() and broadcast()): what waits to go out per routing key / fanout exchange, and the
        # task sending it.
        self._outbox: dict[tuple[str, str], list[tuple[bytes, dict[str, Any], asyncio.Future[None]]]] = {}
        self._senders: dict[tuple[str, str], asyncio.Task[None]] = {}

    # ----- lifecycle -------------------------------------------------------------------------------------------

    @classmethod
    async def connect(cls, conf: cfg.ConfigOpts, service: str) -> Transport:
        """Connect to the first reachable node (bounded by ``reconnect_timeout``) and start supervising."""
        nodes = order_nodes(
            parse_transport_url(conf.transport_url),
            conf.messaging.failover_strategy,
            seed=f"{service}@{conf.host}:{os.getpid()}",
        )
        self = cls(conf, service, nodes)
        self._supervisor = asyncio.create_task(self._supervise(), name=f"rpc-supervisor-{service}")
        try:
            await asyncio.wait_for(self._connected.wait(), conf.messaging.reconnect_timeout)
        except TimeoutError:
            await self.close()
            raise exceptions.ServiceUnavailable(f"no broker node reachable among {self.node_names()}") from None
        if conf.messaging.preferred_node_check_interval > 0 and len(nodes) > 1:
            self._preferred = asyncio.create_task(self._return_to_preferred(), name="rpc-preferred-node")
        return self

    async def close(self) -> None:
        """Stop consuming, close the connection, fail pending calls and casts not yet sent. Idempotent."""
        self._closing = True
        for task in (self._preferred, self._supervisor, *self._senders.values()):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        await self._drop_connection()
        self._fail_pending(exceptions.ServiceUnavailable("transport closed"))

    def node_names(self) -> list[str]:
        return [node_name(n) for n in self.nodes]

    @property
    def broker_node(self) -> str | None:
        """The node this process is attached to now (``host:port``), or None while disconnected."""
        return node_name(self.nodes[self.node_index]) if self._connected.is_set() else None

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    # ----- connection supervision -------------------------------------------------------------------------------

    async def _supervise(self) -> None:
        """Keep one connection up: on loss, try every node once (next one first), then back off with jitter."""
        start = self.node_index
        while not self._closing:
            async for attempt in tenacity.AsyncRetrying(
                retry=tenacity.retry_if_exception_type(_NoNodeReachable),
                wait=tenacity.wait_exponential_jitter(multiplier=0.05, max=2.0, jitter=0.2),
            ):
                with attempt:
                    idx = await self._attach_any(start)
            await self._lost.wait()
            self._connected.clear()
            LOG.warning("lost broker node %s; failing over", node_name(self.nodes[idx]))
            await self._drop_connection()
            start = (self.node_index + 1) % len(self.nodes)

    async def _attach_any(self, start: int) -> int:
        for step in range(len(self.nodes)):
            idx = (start + step) % len(self.nodes)
            if await self._try_node(idx):
                return idx
        raise _NoNodeReachable()

    async def _try_node(self, idx: int) -> bool:
        url = self.nodes[idx]
        try:
            conn = await aio_pika.connect(
                url, timeout=3, client_properties={"connection_name": self.sender}, fail_fast="true"
            )
        except Exception as e:  # any failure to reach a node means: try the next one
            LOG.info("broker node %s unreachable: %s", node_name(url), e)
            return False
        self._lost.clear()
        self._connection = conn
        conn.close_callbacks.add(lambda *_: self._on_connection_closed(conn))
        self.node_index = idx
        try:
            await self._setup()
        except Exception:
            LOG.exception("setting up on broker node %s failed", node_name(url))
            await self._drop_connection()
            return False
        self._connected.set()
        LOG.info("attached to broker node %s", node_name(url))
        return True

    def _on_connection_closed(self, conn: AbstractConnection) -> None:
        # A late callback from a connection we already dropped must not fail over the current one.
        if conn is self._connection:
            self._lost.set()

    async def _setup(self) -> None:
        async with self._setup_lock:
            await self._open_publisher()
            # Fanout data is periodic and self-healing (shared/notes/RABBITMQ.md), so it goes without confirms, on
            # a channel of its own that lives as long as the connection (the confirmed one may be reopened).
            assert self._connection is not None
            self._broadcast_channel = await self._connection.channel(publisher_confirms=False)
            self._fanouts = {}
            for spec in self._consumers:
                await self._start_consumer(spec)

    async def _open_publisher(self) -> None:
        assert self._connection is not None
        channel = await self._connection.channel(publisher_confirms=True, on_return_raises=True)
        self._exchange = await channel.declare_exchange(EXCHANGE, aio_pika.ExchangeType.TOPIC, durable=True)
        dlx = await channel.declare_exchange(DLX, aio_pika.ExchangeType.DIRECT, durable=True)
        del dlx
        # Direct reply-to: the consumer must live on the channel that publishes the requests.
        reply_queue = await channel.get_queue(REPLY_TO, ensure=False)
        await reply_queue.consume(self._on_reply, no_ack=True)
        self._pub_channel = channel
        self._nacks = 0

    async def _start_consumer(self, spec: _ConsumerSpec) -> None:
        assert self._connection is not None
        channel = await self._connection.channel()
        await channel.set_qos(prefetch_count=spec.prefetch)
        queue, tag = await spec.setup(channel)
        self._consumer_channels.append((channel, queue, tag))

    async def _drop_connection(self) -> None:
        self._connected.clear()
        conn, self._connection = self._connection, None
        self._pub_channel = None
        self._exchange = None
        self._broadcast_channel = None
        self._consumer_channels.clear()
        self._fail_pending(exceptions.ServiceUnavailable("broker connection lost before the reply came"))
        if conn is not None and not conn.is_closed:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(conn.close(), 3)

    async def _return_to_preferred(self) -> None:
        """Move back to the preferred (first) node when it is reachable again."""
        interval = self.conf.messaging.preferred_node_check_interval
        while True:
            await asyncio.sleep(interval)
            if self.node_index == 0 or not self._connected.is_set():
                continue
            try:
                probe = await aio_pika.connect(self.nodes[0], timeout=3)
                await probe.close()
            except Exception:
                continue
            LOG.info("preferred broker node %s is back; moving to it", node_name(self.nodes[0]))
            self.node_index = len(self.nodes) - 1  # the supervisor tries index+1 next, i.e. 0
            self._lost.set()

    def _fail_pending(self, exc: Exception) -> None:
        for fut in self._pending.values():
            if not fut.done():
                fut.set_exception(exc)
        self._pending.clear()

    # ----- registration of consumers ----------------------------------------------------------------------------

    async def add_consumer(self, spec: _ConsumerSpec) -> None:
        """Register a consumer; it starts now if connected and again after every reconnect."""
        self._consumers.append(spec)
        if self._connected.is_set():
            async with self._setup_lock:
                await self._start_consumer(spec)

    async def remove_consumers(self, drain_timeout: float = 30.0) -> None:
        """Drain: stop deliveries, let in-flight handlers finish (and ack), then close the consumer channels.

        What is still unacked after ``drain_timeout`` returns to its queue when the channel closes.
        """
        specs, self._consumers = self._consumers, []
        active, self._consumer_channels = list(self._consumer_channels), []
        for _, queue, tag in active:
            with contextlib.suppress(Exception):
                await queue.cancel(tag)
        inflight = [t for spec in specs for t in spec.dispatcher.inflight]
        if inflight:
            await asyncio.wait(inflight, timeout=drain_timeout)
        for channel, _, _ in active:
            with contextlib.suppress(Exception):
                await channel.close()

    # ----- publishing -------------------------------------------------------------------------------------------

    async def publish(
        self,
        body: bytes,
        headers: dict[str, Any],
        routing_key: str,
        *,
        exchange: str = EXCHANGE,
        mandatory: bool = True,
        persistent: bool = True,
        reply_to: str | None = None,
        correlation_id: str | None = None,
        expiration: float | None = None,
        once: bool = False,
    ) -> None:
        """Publish and wait for the broker's confirm; across a failover, wait (bounded) and publish again.

        ``once``: a single attempt, no retry (replies: a direct reply-to address belongs to the caller's
        connection, and retrying a reply that broke ours would break the next one too).

        At-least-once: a publish retried after a lost confirm may arrive twice, so handlers are idempotent.
        Raises ``ServiceUnavailable`` when no node takes it within ``reconnect_timeout``, and ``NotFound`` when
        nobody consumes ``routing_key`` (an unroutable mandatory message).
        """
        message = self._message(body, headers, persistent, reply_to, correlation_id, expiration)
        deadline = asyncio.get_running_loop().time() + self.conf.messaging.reconnect_timeout
        while True:
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                raise exceptions.ServiceUnavailable(
                    f"could not publish to {routing_key!r}: no broker node confirmed it within "
                    f"{self.conf.messaging.reconnect_timeout:.0f}s (nodes {self.node_names()})"
                )
            try:
                await asyncio.wait_for(self._connected.wait(), remaining)
            except TimeoutError:
                continue
            try:
                target = await self._target_exchange(exchange)
                confirm = await target.publish(message, routing_key, mandatory=mandatory, timeout=10)
            except (aio_pika.exceptions.DeliveryError, aiormq.exceptions.PublishError) as e:
                if isinstance(getattr(e, "frame", None), aiormq.spec.Basic.Return):
                    raise exceptions.NotFound(f"no queue is bound for {routing_key!r} on exchange {exchange!r}") from e
                if once:
                    raise exceptions.ServiceUnavailable(f"the broker refused a publish to {routing_key!r}") from e
                await self._on_nack(routing_key)
                continue
            except Exception as e:
                if not _transient(e):
                    raise
                if once:
                    if self._connection is None or self._connection.is_closed:
                        self._lost.set()
                    raise exceptions.ServiceUnavailable(f"publish to {routing_key!r} failed: {e}") from e
                LOG.info("publish to %r interrupted (%s); waiting for the broker", routing_key, e)
                if self._connection is None or self._connection.is_closed:
                    self._lost.set()
                else:
                    await self._reopen_publisher()
                await asyncio.sleep(0.05)
                continue
            if isinstance(confirm, aiormq.spec.Basic.Nack):
                if once:
                    raise exceptions.ServiceUnavailable(f"the broker nacked a publish to {routing_key!r}")
                await self._on_nack(routing_key)
                continue
            self._nacks = 0
            return

    @staticmethod
    def _message(
        body: bytes,
        headers: dict[str, Any],
        persistent: bool,
        reply_to: str | None = None,
        correlation_id: str | None = None,
        expiration: float | None = None,
    ) -> aio_pika.Message:
        return aio_pika.Message(
            body,
            headers=headers,
            content_type="application/json",
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT if persistent else aio_pika.DeliveryMode.NOT_PERSISTENT,
            reply_to=reply_to,
            correlation_id=correlation_id,
            expiration=expiration,
            message_id=uuid.uuid4().hex,
        )

    async def _on_nack(self, routing_key: str) -> None:
        # RabbitMQ 3.10: a channel whose first publish hit a quorum leader election may nack forever (see
        # shared/notes/RABBITMQ.md); a fresh channel cures it.
        self._nacks += 1
        LOG.warning("broker nacked a publish to %r (%d in a row)", routing_key, self._nacks)
        if self._nacks >= 2:
            await self._reopen_publisher()
        await asyncio.sleep(0.05 * self._nacks)

    async def _reopen_publisher(self) -> None:
        if self._connection is None or self._connection.is_closed:
            return
        async with self._setup_lock:
            old = self._pub_channel
            try:
                await self._open_publisher()
            except Exception:
                LOG.warning("could not reopen the publisher channel", exc_info=True)
                self._lost.set()
                return
            self._fail_pending(exceptions.ServiceUnavailable("publisher channel reopened before the reply came"))
            if old is not None:
                with contextlib.suppress(Exception):
                    await old.close()

    async def cast(self, routing_key: str, body: bytes, headers: dict[str, Any]) -> None:
        """``publish`` a cast (an encoded request), coalesced: casts to one routing key that are issued while an
        earlier publish to it waits for its confirm go out together, as one batch message
        (``envelope.encode_batch``), when that confirm is in. One cast alone is sent as it is, at once; under
        load a confirm's round trip gathers the casts behind it, so the broker stores, delivers and
        acknowledges one message where it had several. Returns (or raises ``publish``'s error) when the
        message carrying this cast is confirmed."""
        await self._enqueue(("cast", routing_key), body, headers, self.publish, linger=0.0)

    async def broadcast(self, body: bytes, headers: dict[str, Any], exchange: str) -> None:
        """Publish to every queue bound to the fanout ``exchange``, without a confirm: what goes out this way is
        sent again periodically (capacity reports), so a message lost in a failover heals itself. Raises
        ``ServiceUnavailable`` at once while no broker node is attached (the next period tries again).

        Coalesced: broadcasts to one exchange within ``[messaging] broadcast_batch_window`` go out as one batch
        message (a process simulating many hosts sends hundreds of reports a second); returns when it went."""
        if not self._connected.is_set():
            raise exceptions.ServiceUnavailable(f"broadcast on {exchange!r} failed: not attached to a broker node")
        window = self.conf.messaging.broadcast_batch_window
        if window <= 0:
            await self._broadcast_now(body, headers, exchange)
            return
        await self._enqueue(("fanout", exchange), body, headers, self._broadcast_now, linger=window)

    async def _enqueue(
        self,
        key: tuple[str, str],
        body: bytes,
        headers: dict[str, Any],
        send: Callable[[bytes, dict[str, Any], str], Awaitable[None]],
        *,
        linger: float,
    ) -> None:
        """Queue one request under ``key`` (kind, routing key or exchange) and wait until the message carrying it
        went out through ``send``; starts the key's sender when none runs."""
        if self._closing:
            raise exceptions.ServiceUnavailable("transport closed")
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        queue = self._outbox.setdefault(key, [])
        queue.append((body, headers, fut))
        if key not in self._senders:
            self._senders[key] = asyncio.create_task(self._drain(key, queue, send, linger), name=f"rpc-send-{key[1]}")
        await fut

    async def _drain(
        self,
        key: tuple[str, str],
        queue: list[tuple[bytes, dict[str, Any], asyncio.Future[None]]],
        send: Callable[[bytes, dict[str, Any], str], Awaitable[None]],
        linger: float,
    ) -> None:
        """Send ``queue`` message by message (one request as it is, or a batch of up to ``_BATCH_MAX``), each after
        waiting ``linger`` for more, until it is empty; every caller gets its message's outcome. Whatever is
        left when this is cancelled (``close``) fails."""
        try:
            while queue:
                if linger > 0:
                    await asyncio.sleep(linger)
                batch = queue[:_BATCH_MAX]
                del queue[:_BATCH_MAX]
                futures = [fut for *_, fut in batch]
                if len(batch) == 1:
                    body, headers = batch[0][0], batch[0][1]
                else:
                    body, headers = envelope.encode_batch([(b, h) for b, h, _ in batch], self.sender)
                try:
                    await send(body, headers, key[1])
                except asyncio.CancelledError:
                    _settle(futures, exceptions.ServiceUnavailable(f"{key[1]!r}: transport closed while sending"))
                    raise
                except Exception as e:
                    _settle(futures, e)
                else:
                    _settle(futures, None)
        finally:
            del self._senders[key]
            self._outbox.pop(key, None)
            _settle([fut for *_, fut in queue], exceptions.ServiceUnavailable(f"{key[1]!r}: transport closed"))

    async def _broadcast_now(self, body: bytes, headers: dict[str, Any], exchange: str) -> None:
        message = self._message(body, headers, persistent=False)
        try:
            if not self._connected.is_set() or self._broadcast_channel is None:
                raise aio_pika.exceptions.ChannelInvalidStateError("not attached to a broker node")
            target = self._fanouts.get(exchange)
            if target is None:
                target = await self._broadcast_channel.declare_exchange(
                    exchange, aio_pika.ExchangeType.FANOUT, durable=True
                )
                self._fanouts[exchange] = target
            await target.publish(message, "", mandatory=False)
        except _TRANSIENT as e:
            if self._connection is None or self._connection.is_closed:
                self._lost.set()
            raise exceptions.ServiceUnavailable(f"broadcast on {exchange!r} failed: {e}") from e

    async def _target_exchange(self, name: str) -> AbstractExchange:
        if name == EXCHANGE:
            if self._exchange is None:
                raise aio_pika.exceptions.ChannelInvalidStateError("no publisher channel")
            return self._exchange
        if name != "":
            raise ValueError(f"publish() takes the RPC exchange or the default one, not {name!r} (see broadcast())")
        assert self._pub_channel is not None
        return self._pub_channel.default_exchange

    # ----- calls ------------------------------------------------------------------------------------------------

    async def request(
        self, topic: str, method: str, body: bytes, headers: dict[str, Any], timeout: float, request_id: str
    ) -> Any:
        """Publish a call over direct reply-to and wait for its reply."""
        corr = uuid.uuid4().hex
        fut: asyncio.Future = asyncio.get_running_loop().create_future()
        self._pending[corr] = fut
        try:
            await self.publish(
                body, headers, topic, persistent=False, reply_to=REPLY_TO, correlation_id=corr, expiration=timeout
            )
            try:
                reply = await asyncio.wait_for(fut, timeout)
            except TimeoutError:
                raise exceptions.RpcTimeout(
                    f"no reply from {topic!r} to {method!r} within {timeout:.0f}s (request {request_id})"
                ) from None
        finally:
            self._pending.pop(corr, None)
        return envelope.decode_reply(reply)

    async def _on_reply(self, message: AbstractIncomingMessage) -> None:
        fut = self._pending.get(message.correlation_id or "")
        if fut is not None and not fut.done():
            fut.set_result(message.body)

    # ----- convenience ------------------------------------------------------------------------------------------

    def client(self) -> RpcClient:
        from common.rpc.client import RpcClient

        return RpcClient(self)

    async def serve(self, topic: str, endpoint: object) -> None:
        from common.rpc.server import serve_topic

        await serve_topic(self, topic, endpoint)

    async def serve_fanout(self, exchange: str, endpoint: object) -> None:
        from common.rpc.server import serve_fanout

        await serve_fanout(self, exchange, endpoint)
