"""The trainer's import loop: staged labelled uploads (`dataset-import`) into the dataset.

The gateway stages uploads and queues their batches (shared/dataset_staging.py); this loop,
in a thread of its own with its own connection, imports each with `import_batch`, announces
`dataset.changed`, and acks. A training run, which holds no connection, never holds imports back.

A job is acked only once its batch is imported (or was already: its manifest is gone). While
the store is away the job is held and retried with capped, jittered backoff, the connection
served meanwhile, instead of being given back: each return would spend one of its
`DELIVERY_LIMIT` deliveries. A job that can never be imported (not a batch id, a malformed
manifest) is dead-lettered to `dataset-import.dead`, and so, by the broker, is one on which
the loop keeps failing.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout

from shared import dataset_staging
from shared.backoff import Backoff
from shared.errors import BrokerUnavailable, PermanentError, StorageUnavailable
from shared.messaging.channel import Channel
from shared.messaging.consumer import BrokerAddress, ConsumerLoop
from shared.messaging.delivery import Delivery
from shared.messaging.schemas import DatasetImportRequest, Event
from shared.messaging.topology import EVENT_DATASET_CHANGED, Topology
from shared.settings import Settings
from shared.storage import ObjectStore

log = logging.getLogger(__name__)

# How long an import waits for its dataset.changed event to be confirmed before it gives up
# (the batch stays staged; the job is delivered again after the reconnect).
ANNOUNCE_TIMEOUT_S = 30.0


class DatasetImporter:
    """Consumes `dataset-import` until `stopping` is set; no broker or store error ends it."""

    def __init__(self, settings: Settings, store: ObjectStore, stopping: threading.Event) -> None:
        self.settings = settings
        self.store = store
        self.stopping = stopping
        self.topology = Topology.from_settings(settings)
        # Confirms: the dataset.changed events published here must reach the broker.
        self._loop = ConsumerLoop(
            "dataset imports",
            BrokerAddress(settings.amqp_url, settings.amqp_ca_file),
            self.topology,
            stopping=stopping,
            prefetch=1,
            confirms=True,
            backoff=Backoff(first_s=1.0, cap_s=30.0),
        )
        self.connected = self._loop.connected
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="dataset-import")

    def run(self) -> None:
        """Consume until `stopping`; after any failure, back off (capped) and connect again."""
        try:
            self._loop.run(self._consume)
        finally:
            self._pool.shutdown(wait=True)

    def _consume(self, channel: Channel) -> None:
        """One connection's life; returns when the service stops (a lost connection raises)."""
        queue = self.topology.dataset_import_queue
        log.info("consuming %s", queue)
        for delivery in channel.deliveries(queue, inactivity_timeout_s=0.5):
            if self.stopping.is_set():
                break
            if delivery is not None:
                self._handle(channel, delivery)

    def _handle(self, channel: Channel, delivery: Delivery) -> None:
        """Import one job's batch, announce it, ack; dead-letter a job that can never succeed."""
        try:
            batch_id = dataset_staging.check_batch_id(DatasetImportRequest.decode(delivery.body).batch_id)
        except PermanentError as error:
            log.warning("dead-lettering a dataset import job: %s", error)
            channel.reject(delivery.tag)
            return
        backoff = Backoff(first_s=0.5, cap_s=10.0)
        while True:
            try:
                report = self._import_serving(channel, batch_id)
                break
            except StorageUnavailable as error:
                # Held, not returned: a return would spend one of the job's deliveries.
                delay_s = backoff.next()
                log.warning("cannot import batch %s yet (%s); retrying in %.1fs", batch_id, error, delay_s)
                channel.serve_for(delay_s, self.stopping)
                if self.stopping.is_set():
                    return  # unacked: it goes back to the queue when the connection closes
            except PermanentError as error:
                log.error("dead-lettering dataset import %s: %s", batch_id, error)
                channel.reject(delivery.tag)
                return
        if report is None:
            log.info("dataset batch %s was imported already (no staged manifest); acking its job", batch_id)
        else:
            log.info(
                "imported dataset batch %s into %s: %d added, %d already there, %d duplicates, %d missing",
                batch_id,
                report.collection,
                report.added,
                report.already_imported,
                report.duplicates,
                report.missing,
            )
        channel.ack(delivery.tag)

    def _import_serving(self, channel: Channel, batch_id: str) -> dataset_staging.ImportReport | None:
        """`import_batch` in the helper thread while this one serves the connection (heartbeats).

        The dataset.changed event goes out on this thread (the channel belongs to it) before the
        staged objects are deleted: a crash in between repeats the event (a hint, harmless twice)
        rather than losing it.
        """
        announce_requests: list[tuple[dataset_staging.ImportReport, Future[None]]] = []

        def announce(report: dataset_staging.ImportReport) -> None:
            done: Future[None] = Future()
            announce_requests.append((report, done))
            channel.wake()
            try:
                done.result(timeout=ANNOUNCE_TIMEOUT_S)  # raises what the publish raised: the batch stays staged
            except FutureTimeout:
                raise BrokerUnavailable("dataset.changed was not published in time") from None

        future = self._pool.submit(dataset_staging.import_batch, self.store, batch_id, before_discard=announce)
        future.add_done_callback(lambda _future: channel.wake())
        try:
            while not future.done():
                while announce_requests:
                    report, done = announce_requests.pop()
                    try:
                        self._announce(channel, report)
                    except BaseException as error:
                        done.set_exception(error)
                        raise
                    if not done.done():
                        done.set_result(None)
                channel.serve(0.5)
        except BaseException:
            # The connection is gone: an announcement waiting for it fails, and the batch stays staged.
            while announce_requests:
                _report, done = announce_requests.pop()
                if not done.done():
                    done.set_exception(BrokerUnavailable("lost the broker connection"))
            _wait_quietly(future)
            raise
        return future.result()

    def _announce(self, channel: Channel, report: dataset_staging.ImportReport) -> None:
        event = Event(
            name=EVENT_DATASET_CHANGED,
            event_id=f"import-{report.batch_id}",
            occurred_at=time.time(),
            data={"collection": report.collection, "added": report.added, "batch": report.batch_id},
        )
        channel.publish(self.topology.events_exchange, EVENT_DATASET_CHANGED, event, mandatory=False)


def _wait_quietly(future: Future[object]) -> None:
    """Let a running import finish (never two at once) before the caller reconnects."""
    with contextlib.suppress(Exception):
        future.result()
