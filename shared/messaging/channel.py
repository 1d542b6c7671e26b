"""The channel handle services use: settle deliveries, publish, reply, and serve the connection.

It wraps one pika channel and the connection it belongs to, and offers only what the services
need, in the project's own types (Delivery, Message, the errors of shared/errors.py). Like the
connection under it, a Channel belongs to the thread that opened it; other threads hand work to
that thread with `call_soon_threadsafe`, which runs it during the owner's next `serve`.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from shared.errors import BrokerUnavailable
from shared.messaging import rabbitmq
from shared.messaging.delivery import Delivery
from shared.messaging.schemas import Message

OnDelivery = Callable[[Delivery], None]


class Channel:
    """One open channel on one connection; made by `shared.messaging.rabbitmq.open_channel`."""

    def __init__(self, connection: Any, channel: Any) -> None:
        self._connection = connection
        self._channel = channel

    @property
    def is_open(self) -> bool:
        return bool(self._channel.is_open)

    # Settling deliveries.

    def ack(self, tag: int, *, multiple: bool = False) -> None:
        """Done with the delivery (with `multiple`, every one up to `tag`)."""
        self._channel.basic_ack(tag, multiple=multiple)

    def requeue(self, tag: int) -> None:
        """Give the delivery back to the queue for another consumer (spends one of its deliveries)."""
        self._channel.basic_nack(tag, requeue=True)

    def reject(self, tag: int) -> None:
        """Refuse the delivery for good: the queue's dead-letter exchange takes it, if it has one."""
        self._channel.basic_reject(tag, requeue=False)

    # Publishing.

    def publish(
        self,
        exchange: str,
        routing_key: str,
        message: Message,
        *,
        mandatory: bool = True,
        persistent: bool = True,
        **properties: object,
    ) -> None:
        """Publish `message`; confirmed when the channel is in confirm mode (rabbitmq.publish)."""
        rabbitmq.publish(
            self._channel, exchange, routing_key, message, mandatory=mandatory, persistent=persistent, **properties
        )

    def reply(self, delivery: Delivery, message: Message) -> bool:
        """Answer a request over its `reply_to` (direct reply-to); False when nobody asked for one."""
        if not delivery.reply_to:
            return False
        rabbitmq.publish_reply(self._channel, delivery.reply_to, delivery.correlation_id, message)
        return True

    def republish(self, routing_key: str, delivery: Delivery, *, headers: Mapping[str, Any]) -> None:
        """Send a delivery's body and properties again, persistent and mandatory, to the default
        exchange; raise PublishRefused when the queue refused it or none is bound."""
        rabbitmq.republish(self._channel, routing_key, delivery, headers=headers)

    def publish_raw(
        self, exchange: str, routing_key: str, body: bytes, *, persistent: bool = True, mandatory: bool = False
    ) -> None:
        """Publish bytes that are no Message (a malformed job, in tests); confirmed in confirm mode."""
        rabbitmq.publish_raw(self._channel, exchange, routing_key, body, persistent=persistent, mandatory=mandatory)

    # Consuming.

    def consume(self, queue: str, on_delivery: OnDelivery, *, auto_ack: bool = False) -> str:
        """Call `on_delivery` (during `serve`) for every message of `queue`; return the consumer tag."""
        return self._channel.basic_consume(
            queue,
            lambda _ch, method, properties, body: on_delivery(rabbitmq.delivery_of(method, properties, body)),
            auto_ack=auto_ack,
        )

    def cancel(self, consumer_tag: str) -> None:
        self._channel.basic_cancel(consumer_tag)

    def deliveries(self, queue: str, *, inactivity_timeout_s: float) -> Iterator[Delivery | None]:
        """The messages of `queue` one by one, None after each `inactivity_timeout_s` without one."""
        for method, properties, body in self._channel.consume(queue, inactivity_timeout=inactivity_timeout_s):
            yield None if method is None else rabbitmq.delivery_of(method, properties, body)

    def get(self, queue: str) -> Delivery | None:
        """Take one message from `queue` (unacked) without a consumer; None when it is empty."""
        method, properties, body = self._channel.basic_get(queue)
        return None if method is None else rabbitmq.delivery_of(method, properties, body)

    def subscribe_to_events(self, exchange: str, routing_key: str, on_event: OnDelivery) -> None:
        """Hear `routing_key` events on a private queue that lives as long as this channel (auto-acked)."""
        declared = self._channel.queue_declare("", exclusive=True, auto_delete=True)
        queue = declared.method.queue
        self._channel.queue_bind(queue, exchange, routing_key=routing_key)
        self.consume(queue, on_event, auto_ack=True)

    def queue_depth(self, queue: str) -> int:
        """Messages ready in `queue` (it must exist)."""
        return rabbitmq.queue_depth(self._channel, queue)

    # Serving the connection.

    def serve(self, seconds: float) -> None:
        """Serve the connection for up to `seconds`: heartbeats, deliveries, thread-safe callbacks."""
        self._connection.process_data_events(time_limit=max(seconds, 0))

    def serve_for(
        self, seconds: float, stopping: Any, *, step_s: float = 0.5, tick: Callable[[], None] | None = None
    ) -> None:
        """Serve the connection for `seconds` or until `stopping` (a threading.Event) is set."""
        deadline = time.monotonic() + seconds
        while not stopping.is_set() and (remaining := deadline - time.monotonic()) > 0:
            if tick is not None:
                tick()
            self.serve(min(remaining, step_s))

    def call_soon_threadsafe(self, callback: Callable[[], None]) -> None:
        """From any thread: run `callback` on the owner's thread during its next `serve`.

        Raises BrokerUnavailable when the connection is gone (the callback will never run).
        """
        try:
            self._connection.add_callback_threadsafe(callback)
        except rabbitmq.WRONG_STATE_ERRORS as error:
            raise BrokerUnavailable(f"the broker connection is closed: {error!r}") from error

    def wake(self) -> None:
        """From any thread: make the owner's `serve` return now (nothing when the connection is gone)."""
        with contextlib.suppress(BrokerUnavailable):
            self.call_soon_threadsafe(lambda: None)
