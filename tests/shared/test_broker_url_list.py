"""`AMQP_URL` as a list of nodes: `connect` skips dead ones and spreads clients, against the real RabbitMQ."""

from __future__ import annotations

import urllib.parse
from collections import Counter

import pytest

from shared.errors import BrokerUnavailable, ConfigurationError
from shared.messaging.rabbitmq import broker_urls, connect
from tests.support.network import free_port

CONNECTIONS = 24


def dead_url() -> str:
    """A URL on a free local port: nothing listens there, so a connection is refused at once."""
    return f"amqp://guest:guest@127.0.0.1:{free_port()}/%2F"


@pytest.mark.parametrize(
    ("setting", "expected"),
    [
        ("amqp://a/%2F", ["amqp://a/%2F"]),
        ("amqp://a/%2F,amqp://b/%2F", ["amqp://a/%2F", "amqp://b/%2F"]),
        (" amqp://a/%2F , amqp://b/%2F ,", ["amqp://a/%2F", "amqp://b/%2F"]),
    ],
)
def test_the_setting_names_one_node_or_several(setting: str, expected: list[str]) -> None:
    assert broker_urls(setting) == expected


def test_a_setting_with_no_url_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError):
        broker_urls(" , ")


def test_every_connection_reaches_the_live_node_whichever_node_it_tries_first(amqp_url: str) -> None:
    setting = ",".join([dead_url(), amqp_url, dead_url()])
    ports = Counter()
    for _ in range(CONNECTIONS):
        connection = connect(setting, timeout_s=10)
        try:
            assert connection.is_open
            ports[connection._impl.params.port] += 1
        finally:
            connection.close()
    assert ports == Counter({urllib.parse.urlsplit(amqp_url).port: CONNECTIONS})  # only the live node answers


def test_clients_spread_over_the_live_nodes(amqp_url: str) -> None:
    """Two names of the same local node stand in for two nodes: both must get connections."""
    second_name = amqp_url.replace("127.0.0.1", "localhost")
    assert second_name != amqp_url, "the test broker URL must name 127.0.0.1"
    hosts = Counter()
    for _ in range(CONNECTIONS):
        connection = connect(f"{amqp_url},{second_name}", timeout_s=10)
        hosts[connection._impl.params.host] += 1
        connection.close()
    # With a random first node, all 24 on one name has probability 2 * 0.5**24.
    assert set(hosts) == {"127.0.0.1", "localhost"}, hosts


def test_a_list_of_dead_nodes_gives_up_after_the_timeout() -> None:
    with pytest.raises(BrokerUnavailable):
        connect(f"{dead_url()},{dead_url()}", timeout_s=1.0)
