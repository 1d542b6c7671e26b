"""The only module that imports pika: connections, publishing with confirms, pika's
deliveries and errors turned into the project's own.

Services never see pika: they get a `Channel` (channel.py) from `open_channel` or from the
consumer loop (consumer.py), and `Delivery` values (delivery.py). A pika connection belongs to
the thread that made it; other threads hand work to it with `Channel.call_soon_threadsafe`.

`AMQP_URL` may name the nodes of a cluster as comma-separated URLs: `connect` tries them in
turn, from a random one, so that clients spread over the nodes and a dead node is skipped.
An `amqps://` URL is TLS, with the broker's certificate and host name verified (AMQP_CA_FILE).
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pika
import pika.exceptions
from pika.adapters.blocking_connection import BlockingChannel, BlockingConnection
from pika.spec import Basic, BasicProperties

from shared.backoff import Backoff
from shared.errors import BrokerUnavailable, ConfigurationError, Overloaded, PublishRefused
from shared.messaging.delivery import Delivery
from shared.messaging.schemas import CONTENT_TYPE, SCHEMA_VERSION, Message
from shared.tls import verifying_context

if TYPE_CHECKING:
    from shared.messaging.channel import Channel
    from shared.messaging.topology import Topology

log = logging.getLogger(__name__)

# Every pika error that means "the broker or the connection is gone": retry elsewhere.
CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
    pika.exceptions.AMQPConnectionError,
    pika.exceptions.AMQPChannelError,
    pika.exceptions.StreamLostError,
    ConnectionError,
    OSError,
)
# The broker closed a channel over what was asked on it (403: not permitted, 404: no such queue).
CHANNEL_CLOSED_BY_BROKER: type[pika.exceptions.ChannelClosedByBroker] = pika.exceptions.ChannelClosedByBroker
# ...and, for a callback handed to a connection already closed, its "wrong state" too.
WRONG_STATE_ERRORS: tuple[type[BaseException], ...] = (pika.exceptions.ConnectionWrongStateError, *CONNECTION_ERRORS)


def connection_parameters(amqp_url: str, *, heartbeat_s: int = 30, ca_file: Path | None = None) -> pika.URLParameters:
    """Parameters with bounded timeouts: no connect, socket or block waits forever.

    For an `amqps://` URL, TLS that verifies the broker's certificate against `ca_file` (PEM; the
    system's CAs when None) and its host name against the URL's. pika's own default for amqps
    names no host, so Python's verifying context would refuse to connect at all.
    """
    parameters = pika.URLParameters(amqp_url)
    if amqp_url.lower().startswith("amqps://"):
        context = verifying_context(ca_file, "AMQP_CA_FILE")
        parameters.ssl_options = pika.SSLOptions(context, server_hostname=parameters.host)
    parameters.heartbeat = heartbeat_s
    parameters.blocked_connection_timeout = 30
    parameters.socket_timeout = 5
    parameters.stack_timeout = 10
    parameters.connection_attempts = 1
    return parameters


def broker_urls(amqp_url: str) -> list[str]:
    """The node URLs in `amqp_url`: one URL, or several separated by commas (one per node)."""
    urls = [url.strip() for url in amqp_url.split(",") if url.strip()]
    if not urls:
        raise ConfigurationError("setting AMQP_URL names no broker")
    return urls


def connect(
    amqp_url: str, *, timeout_s: float = 30.0, heartbeat_s: int = 30, ca_file: Path | None = None
) -> BlockingConnection:
    """Connect to the first node that answers, with backoff; raise BrokerUnavailable after `timeout_s`.

    Each round tries every node of `amqp_url` once, from a random start: clients spread over
    the nodes, and one that reconnects after a node died moves to a live one at once.
    `ca_file`: the CA certificates `amqps://` nodes are verified against (Settings.amqp_ca_file).
    A certificate that fails verification is retried like an unreachable node (the operator may
    be replacing it) and ends in BrokerUnavailable, whose message names the TLS error.
    """
    urls = broker_urls(amqp_url)
    deadline = time.monotonic() + timeout_s
    backoff = Backoff(first_s=0.2, cap_s=5.0)
    while True:
        start = random.randrange(len(urls))
        candidates = [
            connection_parameters(url, heartbeat_s=heartbeat_s, ca_file=ca_file) for url in urls[start:] + urls[:start]
        ]
        try:
            # pika tries each parameter set in order and raises once all have failed.
            return BlockingConnection(candidates)
        except CONNECTION_ERRORS as error:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise BrokerUnavailable(f"cannot connect to RabbitMQ: {error!r}") from error
            delay_s = backoff.next()
            log.warning("RabbitMQ not reachable (%r); retrying in %.1fs", error, delay_s)
            time.sleep(min(delay_s, remaining))


def message_properties(message: Message, *, persistent: bool = True, **extra: object) -> BasicProperties:
    """JSON with the job id as message_id, a timestamp and the schema version; persistent unless
    `persistent` is False (events that are only samples)."""
    return BasicProperties(
        message_id=message.message_id,
        content_type=CONTENT_TYPE,
        delivery_mode=pika.DeliveryMode.Persistent if persistent else None,
        timestamp=int(time.time()),
        type=message.kind,
        headers={"schema_version": SCHEMA_VERSION},
        **extra,  # type: ignore[arg-type]
    )


def publish(
    channel: BlockingChannel,
    exchange: str,
    routing_key: str,
    message: Message,
    *,
    mandatory: bool = True,
    persistent: bool = True,
    **properties: object,
) -> None:
    """Publish on a channel in confirm mode; return once the broker has taken the message.

    `mandatory` makes an unroutable message an error: right for jobs, which must reach
    their queue; events pass `mandatory=False`, since a topic with no subscriber is fine.
    Raises Overloaded when a bounded queue rejected it, BrokerUnavailable when the broker
    could not route or confirm it.
    """
    try:
        channel.basic_publish(
            exchange,
            routing_key,
            message.encode(),
            message_properties(message, persistent=persistent, **properties),
            mandatory=mandatory,
        )
    except pika.exceptions.NackError as error:
        raise Overloaded("the prediction queue is full; try again shortly") from error
    except pika.exceptions.UnroutableError as error:
        raise BrokerUnavailable(f"no queue is bound for {routing_key!r}") from error
    except CONNECTION_ERRORS as error:
        raise BrokerUnavailable(f"publish to RabbitMQ failed: {error!r}") from error


def publish_event(
    amqp_url: str, exchange: str, message: Message, *, routing_key: str, ca_file: Path | None = None
) -> None:
    """Open a short-lived connection, publish one confirmed event, close.

    For occasional publishers (the import command, the trainer); hot paths keep a connection.
    """
    connection = connect(amqp_url, timeout_s=10, ca_file=ca_file)
    try:
        channel = connection.channel()
        channel.confirm_delivery()
        channel.basic_publish(exchange, routing_key, message.encode(), message_properties(message))
    except (pika.exceptions.AMQPError, *CONNECTION_ERRORS) as error:
        raise BrokerUnavailable(f"publish to RabbitMQ failed: {error!r}") from error
    finally:
        close_quietly(connection)


def close_quietly(connection: BlockingConnection | None) -> None:
    """Close a connection that may already be dead without raising."""
    if connection is None:
        return
    try:
        if connection.is_open:
            connection.close()
    except WRONG_STATE_ERRORS:
        pass


@contextmanager
def open_channel(
    amqp_url: str,
    *,
    topology: Topology | None = None,
    prefetch: int | None = None,
    confirms: bool = False,
    timeout_s: float = 5.0,
    ca_file: Path | None = None,
) -> Iterator[Channel]:
    """Connect, open a channel, prepare `topology` (declare or check), set the prefetch and
    confirm mode; yield the Channel; close the connection quietly on the way out.

    Raises BrokerUnavailable when no node answers within `timeout_s`; errors of a connection
    lost later are CONNECTION_ERRORS, which callers treat as "reconnect".
    """
    from shared.messaging.channel import Channel  # channel.py builds on this module

    connection = connect(amqp_url, timeout_s=timeout_s, ca_file=ca_file)
    try:
        raw = connection.channel()
        if topology is not None:
            topology.prepare(raw)
        if prefetch is not None:
            raw.basic_qos(prefetch_count=prefetch)
        if confirms:
            raw.confirm_delivery()
        yield Channel(connection, raw)
    finally:
        close_quietly(connection)


def prepare_topology(
    amqp_url: str, topology: Topology, *, declare: bool = False, timeout_s: float = 10.0, ca_file: Path | None = None
) -> None:
    """Connect once and prepare `topology` (`Topology.prepare`), or, with `declare`, declare it
    whatever its `declares` says (bootstrap); raise BrokerUnavailable when that fails."""
    connection = connect(amqp_url, timeout_s=timeout_s, ca_file=ca_file)
    try:
        channel = connection.channel()
        if declare:
            topology.declare(channel)
        else:
            topology.prepare(channel)
    except CONNECTION_ERRORS as error:
        raise BrokerUnavailable(f"cannot declare the broker topology: {error!r}") from error
    finally:
        close_quietly(connection)


def delivery_of(method: Basic.Deliver | Basic.GetOk, properties: BasicProperties, body: bytes) -> Delivery:
    """pika's delivery as the project's own."""
    return Delivery(
        body=body,
        tag=method.delivery_tag,
        redelivered=bool(method.redelivered),
        persistent=properties.delivery_mode == pika.DeliveryMode.Persistent.value,
        headers=dict(properties.headers or {}),
        reply_to=properties.reply_to,
        correlation_id=properties.correlation_id,
        message_id=properties.message_id,
        content_type=properties.content_type,
        timestamp=properties.timestamp,
        type=properties.type,
    )


def publish_reply(channel: BlockingChannel, reply_to: str, correlation_id: str | None, message: Message) -> None:
    """Answer a request over direct reply-to: not persistent, not confirmed (the asker may be gone)."""
    properties = BasicProperties(
        correlation_id=correlation_id, message_id=message.message_id, content_type=CONTENT_TYPE
    )
    channel.basic_publish("", reply_to, message.encode(), properties)


def republish(channel: BlockingChannel, routing_key: str, delivery: Delivery, *, headers: Mapping[str, Any]) -> None:
    """Send `delivery` again (persistent, mandatory) with `headers`; PublishRefused when refused."""
    properties = BasicProperties(
        message_id=delivery.message_id,
        content_type=delivery.content_type,
        delivery_mode=pika.DeliveryMode.Persistent,
        timestamp=delivery.timestamp,
        type=delivery.type,
        headers=dict(headers),
        correlation_id=delivery.correlation_id,
    )
    try:
        channel.basic_publish("", routing_key, delivery.body, properties, mandatory=True)
    except (pika.exceptions.NackError, pika.exceptions.UnroutableError) as error:
        raise PublishRefused(f"{routing_key!r} refused a message: {error!r}") from error


def publish_raw(
    channel: BlockingChannel, exchange: str, routing_key: str, body: bytes, *, persistent: bool, mandatory: bool
) -> None:
    """Publish `body` as it is, with no properties but persistence; PublishRefused when refused."""
    properties = BasicProperties(delivery_mode=pika.DeliveryMode.Persistent if persistent else None)
    try:
        channel.basic_publish(exchange, routing_key, body, properties, mandatory=mandatory)
    except (pika.exceptions.NackError, pika.exceptions.UnroutableError) as error:
        raise PublishRefused(f"{routing_key!r} refused a message: {error!r}") from error


def queue_depth(channel: BlockingChannel, queue: str) -> int:
    """Messages ready in `queue` (a passive declare: it must exist, or the channel closes)."""
    return channel.queue_declare(queue, passive=True).method.message_count
