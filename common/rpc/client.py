"""``RpcClient``: cast, call and fanout. Client stubs (``services/*/rpcapi.py``) are its only users."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from common.context import RequestContext
from common.rpc import envelope

if TYPE_CHECKING:
    from common.rpc.transport import Transport

__all__ = ["RpcClient"]


class RpcClient:
    def __init__(self, transport: Transport) -> None:
        self.transport = transport

    async def cast(self, topic: str, method: str, ctx: RequestContext, **kwargs: Any) -> None:
        """Fire and forget, durably: returns once the broker confirmed the persistent message (which may carry
        other casts to ``topic`` too: ``Transport.cast``).

        Raises ``NotFound`` if no queue is bound for ``topic`` and ``ServiceUnavailable`` if no broker node
        takes it in time.
        """
        body, headers = envelope.encode_request(method, kwargs, ctx, self.transport.sender)
        await self.transport.cast(topic, body, headers)

    async def call(
        self, topic: str, method: str, ctx: RequestContext, timeout: float | None = None, **kwargs: Any
    ) -> Any:
        """Request/reply. Raises the remote error, or ``RpcTimeout`` naming topic, method and request id."""
        body, headers = envelope.encode_request(method, kwargs, ctx, self.transport.sender)
        timeout = timeout if timeout is not None else self.transport.conf.messaging.rpc_timeout
        return await self.transport.request(topic, method, body, headers, timeout, ctx.request_id)

    async def fanout(self, exchange: str, method: str, ctx: RequestContext, **kwargs: Any) -> None:
        """Publish to every queue bound to a fanout exchange, unconfirmed (none bound is fine: what goes out this
        way is periodic, see ``Transport.broadcast``)."""
        body, headers = envelope.encode_request(method, kwargs, ctx, self.transport.sender)
        await self.transport.broadcast(body, headers, exchange)
