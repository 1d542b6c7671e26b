"""Broker chores outside the services' message flow, each on a short-lived connection: is a
node there, how many messages wait in a queue, take or publish one message, delete queues.

For tests, operator commands and tools; services work on a Channel (channel.py). Like the
rest of shared/messaging, these keep pika out of their callers.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from shared.messaging.delivery import Delivery
from shared.messaging.rabbitmq import CHANNEL_CLOSED_BY_BROKER, close_quietly, connect, open_channel


def ping(amqp_url: str, *, timeout_s: float = 3.0) -> None:
    """Connect once and close; raise BrokerUnavailable when no node answers within `timeout_s`."""
    with open_channel(amqp_url, timeout_s=timeout_s):
        pass


def queue_depth(amqp_url: str, queue: str) -> int:
    """Messages ready in `queue` (it must exist)."""
    with open_channel(amqp_url, timeout_s=10) as channel:
        return channel.queue_depth(queue)


def get_one(amqp_url: str, queue: str) -> Delivery | None:
    """Take (and ack) one message from `queue`; None when it is empty."""
    with open_channel(amqp_url, timeout_s=10) as channel:
        delivery = channel.get(queue)
        if delivery is not None:
            channel.ack(delivery.tag)
        return delivery


def publish_raw(amqp_url: str, exchange: str, routing_key: str, body: bytes, *, mandatory: bool = False) -> None:
    """Publish `body` as it is (persistent), confirmed; PublishRefused when the broker refused it."""
    with open_channel(amqp_url, confirms=True, timeout_s=10) as channel:
        channel.publish_raw(exchange, routing_key, body, mandatory=mandatory)


def purge_queue(amqp_url: str, queue: str) -> None:
    """Drop every ready message of `queue`."""
    connection = connect(amqp_url, timeout_s=10)
    try:
        connection.channel().queue_purge(queue)
    finally:
        close_quietly(connection)


def declare_quorum_queue(amqp_url: str, queue: str) -> None:
    """Declare a durable quorum queue of no topology (a smoke test's own)."""
    connection = connect(amqp_url, timeout_s=10)
    try:
        connection.channel().queue_declare(queue, durable=True, arguments={"x-queue-type": "quorum"})
    finally:
        close_quietly(connection)


def delete_queues(amqp_url: str, queues: Iterable[str], exchanges: Iterable[str] = ()) -> None:
    """Delete `queues` and `exchanges` (absent ones are fine)."""
    connection = connect(amqp_url, timeout_s=10)
    try:
        channel = connection.channel()
        for queue in queues:
            channel.queue_delete(queue)
        for exchange in exchanges:
            channel.exchange_delete(exchange)
    finally:
        close_quietly(connection)


def bare_channel(amqp_url: str) -> Any:
    """An AMQP channel with every operation of the protocol and none of the project's guards, for
    tests that probe what the broker permits a user (least privilege). Closed with the process."""
    return connect(amqp_url, timeout_s=10).channel()


def refusal_code(error: BaseException) -> int | None:
    """The broker's reply code when `error` is a channel it closed (403 refused, 404 not found)."""
    return error.reply_code if isinstance(error, CHANNEL_CLOSED_BY_BROKER) else None
