"""The insights consume loop: `dataset.changed` events in, one snapshot per burst out.

Events are hints ("something changed"), not work items: however many are queued, one
refresh covers them all. So the loop takes one delivery (prefetch 1), waits `settle_s` for
the rest of a burst, drains whatever else is queued with `Channel.get` (not limited by the
prefetch), refreshes once, and only then acks everything it took. A crash before the ack
leaves the events queued, so the next run recomputes.

The refresh runs in a helper thread while this thread keeps pumping the connection: a
first full pass over a large dataset can outlast the heartbeat timeout, and a channel
belongs to the thread that opened it.
"""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor, wait
from typing import Any

from services.insights.snapshots import RefreshCancelled, SnapshotBuilder
from shared.backoff import Backoff
from shared.errors import MessageDecodeError, TransientError
from shared.messaging.channel import Channel
from shared.messaging.consumer import BrokerAddress, ConsumerLoop
from shared.messaging.delivery import Delivery
from shared.messaging.rabbitmq import CONNECTION_ERRORS
from shared.messaging.schemas import Event
from shared.messaging.topology import Topology
from shared.settings import Settings

log = logging.getLogger(__name__)

# One drain takes at most this many queued events; the rest wait for the next refresh.
_MAX_DRAIN = 10_000


class InsightsConsumer:
    """Refreshes the snapshot once at start-up and once per burst of `dataset.changed` events."""

    def __init__(
        self, settings: Settings, builder: SnapshotBuilder, *, settle_s: float = 0.5, max_backoff_s: float = 30.0
    ) -> None:
        self.topology = Topology.from_settings(settings)
        self.builder = builder
        self.settle_s = settle_s
        self.max_backoff_s = max_backoff_s
        self.stopping = threading.Event()
        # Every service declares (or checks) the insights queue, so events published while
        # insights is down wait for it (shared/messaging/topology.py).
        self._loop = ConsumerLoop(
            "insights",
            BrokerAddress(settings.amqp_url, settings.amqp_ca_file),
            self.topology,
            stopping=self.stopping,
            prefetch=1,
            backoff=Backoff(first_s=1.0, cap_s=max_backoff_s),
            on_unavailable=self._refresh_if_owed,
        )
        self.connected = self._loop.connected
        # A refresh is owed at start-up, so a fresh system gets a snapshot without any event.
        self._owed = True
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="insights-refresh")

    def run(self) -> None:
        """Consume until `stopping` is set; after any failure, back off (capped) and start again.

        Nothing the broker, the store or a refresh raises ends this loop: the process stays up
        and catches up once they are back.
        """
        try:
            self._loop.run(self._consume)
        finally:
            self._pool.shutdown(wait=True)

    def _refresh_if_owed(self) -> None:
        """The start-up refresh, when the broker is not there to tell us about changes."""
        if not self._owed:
            return
        try:
            self.builder.refresh(self.stopping)
            self._owed = False
        except RefreshCancelled:
            pass
        except TransientError as error:
            log.warning("cannot refresh the snapshot yet: %s", error)
        except Exception:  # retried with the next connection attempt
            log.exception("the snapshot refresh failed")

    def _consume(self, channel: Channel) -> None:
        queue = self.topology.insights_queue
        held: list[int] = []  # delivery tags taken but not yet acked

        def on_delivery(delivery: Delivery) -> None:
            _note(delivery.body)
            held.append(delivery.tag)

        channel.consume(queue, on_delivery)
        log.info("consuming %s", queue)
        retry_at, backoff = 0.0, Backoff(first_s=1.0, cap_s=self.max_backoff_s)
        while not self.stopping.is_set():
            if not (held or self._owed) or time.monotonic() < retry_at:
                channel.serve(0.5)
                continue
            # Uploads come in bursts: let the burst arrive, then take everything queued.
            channel.serve_for(self.settle_s, self.stopping, step_s=0.2)
            held.extend(_drain(channel, queue))
            refresh = self._refresh_serving(channel)  # broker errors raise from here, refresh errors below
            try:
                refresh.result()
            except RefreshCancelled:
                return  # unacked events go back to the queue when the connection closes
            except TransientError as error:  # the store away: the events stay held, retried later
                delay_s = backoff.next()
                log.warning("refresh failed (%s); retrying in %.1fs", error, delay_s)
            except Exception:  # a surprise is retried the same way, with its traceback logged
                delay_s = backoff.next()
                log.exception("refresh failed; retrying in %.1fs", delay_s)
            else:
                self._owed = False
                backoff.reset()
                if held:
                    # Tags of consumed and fetched (get) deliveries share one sequence per channel.
                    channel.ack(max(held), multiple=True)
                    log.info("acked %d dataset.changed events", len(held))
                    held.clear()
                continue
            retry_at = time.monotonic() + delay_s

    def _refresh_serving(self, channel: Channel) -> Future[dict[str, Any]]:
        """Run a refresh in the helper thread while serving the connection; return it once done."""
        future: Future[dict[str, Any]] = self._pool.submit(self.builder.refresh, self.stopping)
        future.add_done_callback(lambda _future: channel.wake())
        try:
            while not future.done():
                channel.serve(1.0)
        except CONNECTION_ERRORS:
            # Never two refreshes at once: let this one finish before reconnecting.
            wait([future])
            raise
        return future


def _drain(channel: Channel, queue: str) -> list[int]:
    """Take every event waiting in `queue` (unacked); return their delivery tags."""
    tags = []
    while len(tags) < _MAX_DRAIN:
        delivery = channel.get(queue)
        if delivery is None:
            break
        _note(delivery.body)
        tags.append(delivery.tag)
    return tags


def _note(body: bytes) -> None:
    """Log an event; a malformed one still counts as a hint that the dataset changed."""
    try:
        event = Event.decode(body)
        log.debug("event %s %s %s", event.name, event.event_id, event.data)
    except MessageDecodeError as error:
        log.warning("malformed dataset event (treated as a change): %s", error)
