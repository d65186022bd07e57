"""Messaging: casts to quorum queues with confirms, calls over direct reply-to, fanout reports, failover."""

from common.rpc.client import RpcClient
from common.rpc.transport import Transport

__all__ = ["RpcClient", "Transport"]
