"""The insights consume loop: `dataset.changed` events in, one snapshot per burst out.

Events are hints ("something changed"), not work items: however many are queued, one
refresh covers them all. So the loop takes one delivery (prefetch 1), waits `settle_s` for
the rest of a burst, drains whatever else is queued with `basic_get` (not limited by the
prefetch), refreshes once, and only then acks everything it took. A crash before the ack
leaves the events queued, so the next run recomputes.

The refresh runs in a helper thread while this thread keeps pumping the connection: a
first full pass over a large dataset can outlast the heartbeat timeout, and a pika
connection belongs to the thread that made it.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor, wait
from typing import Any

import pika.exceptions
from pika.adapters.blocking_connection import BlockingChannel, BlockingConnection
from pika.spec import Basic, BasicProperties

from services.insights.snapshots import RefreshCancelled, SnapshotBuilder
from shared.errors import BrokerUnavailable, MessageDecodeError, TransientError
from shared.messaging.rabbitmq import CONNECTION_ERRORS, close_quietly, connect
from shared.messaging.schemas import Event
from shared.messaging.topology import Topology
from shared.settings import Settings

log = logging.getLogger(__name__)

# One drain takes at most this many queued events; the rest wait for the next refresh.
_MAX_DRAIN = 10_000


def declare_insights_queue(channel: BlockingChannel, topology: Topology) -> str:
    """Declare the events exchange and insights' durable quorum queue bound to `dataset.changed`.

    `Topology.declare` holds the queue's one definition (every service declares it, so events
    published while insights is down wait for it); this names what the consumer relies on.
    """
    topology.prepare(channel)
    return topology.insights_queue


class InsightsConsumer:
    """Refreshes the snapshot once at start-up and once per burst of `dataset.changed` events."""

    def __init__(
        self, settings: Settings, builder: SnapshotBuilder, *, settle_s: float = 0.5, max_backoff_s: float = 30.0
    ) -> None:
        self.amqp_url = settings.amqp_url
        self.amqp_ca_file = settings.amqp_ca_file
        self.topology = Topology.from_settings(settings)
        self.builder = builder
        self.settle_s = settle_s
        self.max_backoff_s = max_backoff_s
        self.stopping = threading.Event()
        self.connected = threading.Event()
        # A refresh is owed at start-up, so a fresh system gets a snapshot without any event.
        self._owed = True
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="insights-refresh")

    def run(self) -> None:
        """Consume until `stopping` is set; after any failure, back off (capped) and start again.

        Nothing the broker, the store or a refresh raises ends this loop: the process stays up
        and catches up once they are back.
        """
        backoff_s = 1.0
        try:
            while not self.stopping.is_set():
                try:
                    self._connect_and_consume()
                    backoff_s = 1.0
                    continue
                except BrokerUnavailable as error:
                    log.warning("%s; retrying in %.0fs", error, backoff_s)
                    if self._owed:
                        self._refresh_without_broker()
                except Exception:  # a surprise is logged and outlived, never a reason to exit
                    log.exception("the insights loop failed; starting again in %.0fs", backoff_s)
                self.stopping.wait(backoff_s)
                backoff_s = min(backoff_s * 2, self.max_backoff_s)
        finally:
            self._pool.shutdown(wait=True)

    def _connect_and_consume(self) -> None:
        """One broker connection's life; returns when it is lost or the service stops."""
        connection = connect(self.amqp_url, timeout_s=5, ca_file=self.amqp_ca_file)
        try:
            self._consume(connection)
        except CONNECTION_ERRORS as error:
            log.warning("lost the broker connection (%r); reconnecting", error)
        finally:
            self.connected.clear()
            close_quietly(connection)

    def _refresh_without_broker(self) -> None:
        """The start-up refresh, when the broker is not there to tell us about changes."""
        try:
            self.builder.refresh(self.stopping)
            self._owed = False
        except RefreshCancelled:
            pass
        except TransientError as error:
            log.warning("cannot refresh the snapshot yet: %s", error)
        except Exception:  # retried with the next connection attempt
            log.exception("the snapshot refresh failed")

    def _consume(self, connection: BlockingConnection) -> None:
        channel = connection.channel()
        queue = declare_insights_queue(channel, self.topology)
        channel.basic_qos(prefetch_count=1)
        held: list[int] = []  # delivery tags taken but not yet acked

        def on_delivery(_channel: BlockingChannel, method: Basic.Deliver, _props: BasicProperties, body: bytes) -> None:
            _note(body)
            held.append(method.delivery_tag)

        channel.basic_consume(queue, on_delivery)
        self.connected.set()
        log.info("consuming %s", queue)
        retry_at, backoff_s = 0.0, 1.0
        while not self.stopping.is_set():
            if not (held or self._owed) or time.monotonic() < retry_at:
                connection.process_data_events(time_limit=0.5)
                continue
            # Uploads come in bursts: let the burst arrive, then take everything queued.
            self._pump(connection, self.settle_s)
            held.extend(_drain(channel, queue))
            refresh = self._refresh_pumping(connection)  # broker errors raise from here, refresh errors below
            try:
                refresh.result()
            except RefreshCancelled:
                return  # unacked events go back to the queue when the connection closes
            except TransientError as error:  # the store away: the events stay held, retried later
                log.warning("refresh failed (%s); retrying in %.0fs", error, backoff_s)
            except Exception:  # a surprise is retried the same way, with its traceback logged
                log.exception("refresh failed; retrying in %.0fs", backoff_s)
            else:
                self._owed, backoff_s = False, 1.0
                if held:
                    # Tags of basic_consume and basic_get share one sequence per channel.
                    channel.basic_ack(max(held), multiple=True)
                    log.info("acked %d dataset.changed events", len(held))
                    held.clear()
                continue
            retry_at, backoff_s = time.monotonic() + backoff_s, min(backoff_s * 2, self.max_backoff_s)

    def _pump(self, connection: BlockingConnection, seconds: float) -> None:
        """Serve the connection (heartbeats, deliveries) for `seconds` or until stopping."""
        deadline = time.monotonic() + seconds
        while not self.stopping.is_set() and (remaining := deadline - time.monotonic()) > 0:
            connection.process_data_events(time_limit=min(remaining, 0.2))

    def _refresh_pumping(self, connection: BlockingConnection) -> Future[dict[str, Any]]:
        """Run a refresh in the helper thread while serving the connection; return it once done."""
        future: Future[dict[str, Any]] = self._pool.submit(self.builder.refresh, self.stopping)
        future.add_done_callback(lambda _future: _wake(connection))
        try:
            while not future.done():
                connection.process_data_events(time_limit=1.0)
        except CONNECTION_ERRORS:
            # Never two refreshes at once: let this one finish before reconnecting.
            wait([future])
            raise
        return future


def _wake(connection: BlockingConnection) -> None:
    """Make the connection thread's `process_data_events` return now (from any thread)."""
    # A closed connection has no thread waiting on it: nothing to wake.
    with contextlib.suppress(pika.exceptions.ConnectionWrongStateError):
        connection.add_callback_threadsafe(lambda: None)


def _drain(channel: BlockingChannel, queue: str) -> list[int]:
    """Take every event waiting in `queue` (unacked); return their delivery tags."""
    tags = []
    while len(tags) < _MAX_DRAIN:
        method, _properties, body = channel.basic_get(queue)
        if method is None:
            break
        _note(body)
        tags.append(method.delivery_tag)
    return tags


def _note(body: bytes) -> None:
    """Log an event; a malformed one still counts as a hint that the dataset changed."""
    try:
        event = Event.decode(body)
        log.debug("event %s %s %s", event.name, event.event_id, event.data)
    except MessageDecodeError as error:
        log.warning("malformed dataset event (treated as a change): %s", error)
