"""``Transport.publish`` across a confirm its channel dropped. The broker side is a stand-in (``ExchangeStandIn``):
the race it replays (aiormq rejecting a pending confirm with a bare ``Exception`` as a node dies) cannot be
produced on demand with a real broker; tests/functional/rpc/test_failover.py kills real nodes under load."""

from __future__ import annotations

import aiormq
import pytest

from common import config
from common.rpc.transport import Transport


class ExchangeStandIn:
    """Stands in for an aio-pika exchange: each publish takes the next outcome (raise it, or return it)."""

    def __init__(self, *outcomes: object) -> None:
        self.outcomes = list(outcomes)
        self.published = 0

    async def publish(self, message, routing_key, *, mandatory, timeout):
        self.published += 1
        outcome = self.outcomes.pop(0)
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome


def _transport(exchange: ExchangeStandIn) -> Transport:
    conf = config.new_conf()
    conf(args=[], default_config_files=[])
    transport = Transport(conf, "test", ["127.0.0.1:1"])
    transport._connected.set()
    transport._exchange = exchange  # type: ignore[assignment]
    return transport


async def test_a_confirm_rejected_with_a_bare_exception_is_published_again():
    exchange = ExchangeStandIn(Exception(), aiormq.spec.Basic.Ack())
    await _transport(exchange).publish(b"{}", {}, "topic")
    assert exchange.published == 2


async def test_a_failure_no_lost_channel_explains_is_not_retried():
    exchange = ExchangeStandIn(ValueError("bad body"), aiormq.spec.Basic.Ack())
    with pytest.raises(ValueError, match="bad body"):
        await _transport(exchange).publish(b"{}", {}, "topic")
    assert exchange.published == 1
