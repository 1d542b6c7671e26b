"""Looking at the real broker from tests: queue depths, a started gateway broker client."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from services.gateway.broker_client import BrokerClient
from shared.messaging import admin
from shared.messaging.topology import Topology
from shared.settings import Settings

CONNECT_TIMEOUT_S = 10


def message_count(amqp_url: str, queue: str) -> int:
    """Messages ready in `queue` (it must exist)."""
    return admin.queue_depth(amqp_url, queue)


@contextmanager
def connected_client(settings: Settings) -> Iterator[BrokerClient]:
    """The gateway's broker client, connected (or not, for a dead broker URL), then stopped."""
    client = BrokerClient(settings.amqp_url, Topology.from_settings(settings))
    client.start()
    try:
        yield client
    finally:
        client.stop()
