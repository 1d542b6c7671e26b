"""The gateway's one broker client (`context.broker_client()`): it publishes prediction jobs
and heat-map requests and waits for their answers over direct reply-to, and publishes training
requests, staged dataset imports and events.

One thread owns the broker connection and its channel (neither is thread-safe): it runs the
shared consumer loop (shared/messaging/consumer.py), which reconnects with backoff. Request
threads register what they wait for, hand the publishing to that thread with
`Channel.call_soon_threadsafe`, and block on their own events with a deadline.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from pathlib import Path

from shared import metrics
from shared.backoff import Backoff
from shared.errors import BrokerUnavailable, MessageDecodeError, Overloaded, SkinLesionError
from shared.messaging.channel import Channel
from shared.messaging.consumer import BrokerAddress, ConsumerLoop
from shared.messaging.delivery import Delivery
from shared.messaging.heatmaps import HeatmapReply, HeatmapRequest
from shared.messaging.rpc import DIRECT_REPLY_TO
from shared.messaging.schemas import DatasetImportRequest, Event, Message, PredictionJob, PredictionResult, TrainRequest
from shared.messaging.topology import Topology

log = logging.getLogger(__name__)


@dataclass
class PendingReply:
    """One answer, filled in by the connection thread; `job_id` is the request's correlation id."""

    job_id: str
    done: threading.Event = field(default_factory=threading.Event)
    result: PredictionResult | None = None
    error: SkinLesionError | None = None

    @staticmethod
    def decode(body: bytes) -> PredictionResult:
        return PredictionResult.decode(body)

    def resolve(self, result: Message) -> None:
        self.result = result
        self.done.set()

    def fail(self, error: SkinLesionError) -> None:
        self.error = error
        self.done.set()


@dataclass
class PendingHeatmap(PendingReply):
    """A heat-map request's answer: the worker stored the map, or the reply's error says why not."""

    result: HeatmapReply | None = None

    @staticmethod
    def decode(body: bytes) -> HeatmapReply:
        return HeatmapReply.decode(body)


class BrokerClient:
    """Owns one broker connection per gateway process; safe to call from many threads.

    Carries prediction jobs (with replies) and the gateway's other publishes (events,
    training requests), all with publisher confirms.
    """

    def __init__(
        self, amqp_url: str, topology: Topology, *, publish_timeout_s: float = 10.0, ca_file: Path | None = None
    ) -> None:
        self._topology = topology
        self._publish_timeout_s = publish_timeout_s
        self._pending: dict[str, PendingReply] = {}
        self._lock = threading.Lock()
        self._channel: Channel | None = None
        self._stopping = threading.Event()
        self._answer_listeners: list[Callable[[str], None]] = []
        self._loop = ConsumerLoop(
            "gateway broker client",
            BrokerAddress(amqp_url, ca_file),
            topology,
            stopping=self._stopping,
            confirms=True,
            backoff=Backoff(0.5, 5.0),
        )
        self.connected = self._loop.connected
        self._thread = threading.Thread(target=self._run, name="broker-connection", daemon=True)

    def start(self) -> None:
        self._thread.start()

    @property
    def alive(self) -> bool:
        """False once the connection thread has died: only a restart of the process helps."""
        return self._thread.is_alive()

    def stop(self, timeout_s: float = 5.0) -> None:
        self._stopping.set()
        channel = self._channel
        if channel is not None:
            channel.wake()
        self._thread.join(timeout_s)

    def add_answer_listener(self, listener: Callable[[str], None]) -> None:
        """Call `listener(job_id)` on the connection thread for every answer that arrives, awaited or not."""
        self._answer_listeners.append(listener)

    def submit(self, jobs: list[PredictionJob], *, want_replies: bool) -> list[PendingReply]:
        """Publish `jobs` with confirms; return their pending replies (empty if not wanted).

        Every job asks for its answer (answer listeners hear of each); `want_replies` says
        whether a request thread will wait for them. Raises Overloaded when the queue is full,
        BrokerUnavailable when the broker is gone.
        """
        pending = [PendingReply(job.job_id) for job in jobs] if want_replies else []
        with self._lock:
            self._pending.update((reply.job_id, reply) for reply in pending)
        try:
            self._run_on_connection(lambda channel: self._publish_jobs(channel, jobs))
        except SkinLesionError:
            self.forget(pending)
            raise
        return pending

    def request_heatmap(self, request: HeatmapRequest) -> PendingHeatmap:
        """Ask the workers for a heat map; its reply arrives on the returned pending reply.

        A fresh correlation id per request: clients asking for the same map at once each get
        their own reply. Raises Overloaded when the heat-map queue is full.
        """
        pending = PendingHeatmap(f"heatmap-{uuid.uuid4().hex}")
        with self._lock:
            self._pending[pending.job_id] = pending
        try:
            self._run_on_connection(
                lambda channel: channel.publish(
                    "", self._topology.heatmap_queue, request, correlation_id=pending.job_id, reply_to=DIRECT_REPLY_TO
                )
            )
        except Overloaded as error:
            self.forget([pending])
            raise Overloaded("too many heat maps are waiting to be drawn; retry shortly") from error
        except SkinLesionError:
            self.forget([pending])
            raise
        return pending

    def publish(self, exchange: str, routing_key: str, message: Message, *, mandatory: bool = True) -> None:
        """Publish one message with confirms on the connection thread; wait for the confirm."""
        self._run_on_connection(lambda channel: channel.publish(exchange, routing_key, message, mandatory=mandatory))

    def publish_event(self, name: str, data: dict[str, object]) -> None:
        """Publish a fact on the events exchange, routed by its name (e.g. model.promoted)."""
        event = Event(name=name, event_id=uuid.uuid4().hex, occurred_at=time.time(), data=data)
        self.publish(self._topology.events_exchange, name, event, mandatory=False)

    def request_training(self, request: TrainRequest) -> None:
        self.publish("", self._topology.train_queue, request)

    def request_dataset_import(self, request: DatasetImportRequest) -> None:
        """Queue a staged batch for the trainer's import (persistent, confirmed)."""
        self.publish("", self._topology.dataset_import_queue, request)

    def training_requests_waiting(self) -> int:
        """Training requests on the `train` queue that no trainer has taken yet."""
        counts: list[int] = []

        def count(channel: Channel) -> None:
            counts.append(channel.queue_depth(self._topology.train_queue))

        self._run_on_connection(count)
        return counts[0]

    def _run_on_connection(self, action: Callable[[Channel], None]) -> None:
        channel = self._channel
        if channel is None or not self.connected.is_set():
            raise BrokerUnavailable("not connected to RabbitMQ")
        outcome: Future[None] = Future()

        def run() -> None:
            try:
                action(channel)
            except SkinLesionError as error:
                outcome.set_exception(error)
                return
            except Exception as error:
                # The request must hear of it now, not at its timeout; the loop reconnects.
                outcome.set_exception(BrokerUnavailable(f"publishing failed: {error!r}"))
                raise
            outcome.set_result(None)

        channel.call_soon_threadsafe(run)  # BrokerUnavailable when the connection is closed
        try:
            outcome.result(timeout=self._publish_timeout_s)
        except FutureTimeout:
            raise BrokerUnavailable("the broker did not confirm in time") from None

    def forget(self, pending: list[PendingReply]) -> None:
        """Stop waiting for these replies (answered, timed out, or never published)."""
        with self._lock:
            for reply in pending:
                self._pending.pop(reply.job_id, None)

    # Everything below runs on the connection thread.

    def _publish_jobs(self, channel: Channel, jobs: list[PredictionJob]) -> None:
        for job in jobs:
            queue = self._topology.predict_queue
            channel.publish("", queue, job, correlation_id=job.job_id, reply_to=DIRECT_REPLY_TO)
            metrics.JOBS_PUBLISHED.inc()

    def _on_reply(self, reply_delivery: Delivery) -> None:
        job_id = reply_delivery.correlation_id or ""
        for listener in self._answer_listeners:
            listener(job_id)
        with self._lock:
            reply = self._pending.pop(job_id, None)
        if reply is None:
            return  # an answer nobody waits for any more (timed out, or a redelivered job)
        try:
            reply.resolve(reply.decode(reply_delivery.body))
        except MessageDecodeError as error:
            reply.fail(error)

    def _run(self) -> None:
        self._loop.run(self._serve, setup=self._listen_for_replies)

    def _listen_for_replies(self, channel: Channel) -> None:
        # Direct reply-to: consume the pseudo-queue (no-ack) before publishing to it.
        channel.consume(DIRECT_REPLY_TO, self._on_reply, auto_ack=True)
        self._channel = channel

    def _serve(self, channel: Channel) -> None:
        log.info("connected to RabbitMQ")
        try:
            while not self._stopping.is_set():
                channel.serve(1)
        finally:
            self._channel = None
            self._fail_all_pending()

    def _fail_all_pending(self) -> None:
        # Replies travel on this connection's channel: once it is gone they cannot arrive.
        # The jobs themselves are safe in the queue; clients can poll their ids.
        with self._lock:
            pending, self._pending = list(self._pending.values()), {}
        for reply in pending:
            reply.fail(BrokerUnavailable("lost the broker connection before the answer arrived"))
