"""Fixtures for transport tests on the real three-node cluster: a fresh vhost per module and a conf factory."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from typing import Any

import pytest

from common.config import new_conf
from tests.fixtures.rabbitmq import RabbitCluster


@pytest.fixture(scope="module")
def cluster_vhost(rabbit_cluster: RabbitCluster) -> Iterator[str]:
    name = f"rpc-{secrets.token_hex(4)}"
    rabbit_cluster.add_vhost(name)
    try:
        yield name
    finally:
        for i, node in enumerate(rabbit_cluster.nodes):  # nodes killed by a failed test are started again
            if not node.running:
                rabbit_cluster.start_node(i)
        rabbit_cluster.delete_vhost(name)


def make_conf(transport_url: str, host: str, **messaging: Any):
    conf = new_conf()
    conf([], project="stratus", default_config_files=[])
    conf.set_override("transport_url", transport_url)
    conf.set_override("host", host)
    defaults = {"failover_strategy": "static", "reconnect_timeout": 30.0, "preferred_node_check_interval": 0}
    for key, value in {**defaults, **messaging}.items():
        conf.set_override(key, value, "messaging")
    return conf
