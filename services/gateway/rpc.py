"""Publishing prediction jobs (and heat-map requests) and waiting for their answers over direct reply-to.

One thread owns the pika connection (pika connections are not thread-safe). Request
threads register what they wait for, hand the publishing to that thread with
`add_callback_threadsafe`, and block on their own events with a deadline.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from pathlib import Path

from pika.adapters.blocking_connection import BlockingChannel, BlockingConnection
from pika.spec import Basic, BasicProperties

from shared import metrics
from shared.errors import BrokerUnavailable, MessageDecodeError, Overloaded, SkinLesionError
from shared.messaging.heatmaps import HeatmapReply, HeatmapRequest
from shared.messaging.rabbitmq import CONNECTION_ERRORS, close_quietly, connect, publish
from shared.messaging.schemas import DatasetImportRequest, Event, Message, PredictionJob, PredictionResult, TrainRequest
from shared.messaging.topology import Topology

log = logging.getLogger(__name__)

DIRECT_REPLY_TO = "amq.rabbitmq.reply-to"


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


class PredictionClient:
    """Owns one broker connection per gateway process; safe to call from many threads.

    Carries prediction jobs (with replies) and the gateway's other publishes (events,
    training requests), all with publisher confirms.
    """

    def __init__(
        self, amqp_url: str, topology: Topology, *, publish_timeout_s: float = 10.0, ca_file: Path | None = None
    ) -> None:
        self._amqp_url = amqp_url
        self._ca_file = ca_file
        self._topology = topology
        self._publish_timeout_s = publish_timeout_s
        self._pending: dict[str, PendingReply] = {}
        self._lock = threading.Lock()
        self._connection: BlockingConnection | None = None
        self._channel: BlockingChannel | None = None
        self._stopping = threading.Event()
        self._answer_listeners: list[Callable[[str], None]] = []
        self.connected = threading.Event()
        self._thread = threading.Thread(target=self._run, name="broker-connection", daemon=True)

    def start(self) -> None:
        self._thread.start()

    @property
    def alive(self) -> bool:
        """False once the connection thread has died: only a restart of the process helps."""
        return self._thread.is_alive()

    def stop(self, timeout_s: float = 5.0) -> None:
        self._stopping.set()
        connection = self._connection
        if connection is not None:
            with contextlib.suppress(*CONNECTION_ERRORS):
                connection.add_callback_threadsafe(lambda: None)  # wake the loop up
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
            self._run_on_connection(lambda: self._publish_jobs(jobs))
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
                lambda: publish(
                    self._channel,
                    "",
                    self._topology.heatmap_queue,
                    request,
                    correlation_id=pending.job_id,
                    reply_to=DIRECT_REPLY_TO,
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
        self._run_on_connection(lambda: publish(self._channel, exchange, routing_key, message, mandatory=mandatory))

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

        def count() -> None:
            declared = self._channel.queue_declare(self._topology.train_queue, passive=True)
            counts.append(declared.method.message_count)

        self._run_on_connection(count)
        return counts[0]

    def _run_on_connection(self, action: Callable[[], None]) -> None:
        connection = self._connection
        if connection is None or not self.connected.is_set():
            raise BrokerUnavailable("not connected to RabbitMQ")
        outcome: Future[None] = Future()

        def run() -> None:
            try:
                action()
            except SkinLesionError as error:
                outcome.set_exception(error)
                return
            except Exception as error:
                # The request must hear of it now, not at its timeout; the loop reconnects.
                outcome.set_exception(BrokerUnavailable(f"publishing failed: {error!r}"))
                raise
            outcome.set_result(None)

        try:
            connection.add_callback_threadsafe(run)
            outcome.result(timeout=self._publish_timeout_s)
        except FutureTimeout:
            raise BrokerUnavailable("the broker did not confirm in time") from None
        except CONNECTION_ERRORS as error:
            raise BrokerUnavailable(f"the broker connection is closed: {error!r}") from error

    def forget(self, pending: list[PendingReply]) -> None:
        """Stop waiting for these replies (answered, timed out, or never published)."""
        with self._lock:
            for reply in pending:
                self._pending.pop(reply.job_id, None)

    # Everything below runs on the connection thread.

    def _publish_jobs(self, jobs: list[PredictionJob]) -> None:
        for job in jobs:
            queue = self._topology.predict_queue
            publish(self._channel, "", queue, job, correlation_id=job.job_id, reply_to=DIRECT_REPLY_TO)
            metrics.JOBS_PUBLISHED.inc()

    def _on_reply(
        self, _channel: BlockingChannel, _method: Basic.Deliver, properties: BasicProperties, body: bytes
    ) -> None:
        job_id = properties.correlation_id or ""
        for listener in self._answer_listeners:
            listener(job_id)
        with self._lock:
            reply = self._pending.pop(job_id, None)
        if reply is None:
            return  # an answer nobody waits for any more (timed out, or a redelivered job)
        try:
            reply.resolve(reply.decode(body))
        except MessageDecodeError as error:
            reply.fail(error)

    def _run(self) -> None:
        delay_s = 0.5
        while not self._stopping.is_set():
            try:
                self._connection = connect(self._amqp_url, timeout_s=5, ca_file=self._ca_file)
                self._channel = self._connection.channel()
                self._topology.prepare(self._channel)
                self._channel.confirm_delivery()
                # Direct reply-to: consume the pseudo-queue (no-ack) before publishing to it.
                self._channel.basic_consume(DIRECT_REPLY_TO, self._on_reply, auto_ack=True)
                self.connected.set()
                delay_s = 0.5
                log.info("connected to RabbitMQ")
                while not self._stopping.is_set():
                    self._connection.process_data_events(time_limit=1)
            except Exception as error:  # whatever pika raises, this thread must live on
                log.warning("broker connection lost (%r); reconnecting in %.1fs", error, delay_s)
            finally:
                self.connected.clear()
                self._fail_all_pending()
                close_quietly(self._connection)
                self._connection = None
            self._stopping.wait(delay_s)
            delay_s = min(delay_s * 2, 5.0)

    def _fail_all_pending(self) -> None:
        # Replies travel on this connection's channel: once it is gone they cannot arrive.
        # The jobs themselves are safe in the queue; clients can poll their ids.
        with self._lock:
            pending, self._pending = list(self._pending.values()), {}
        for reply in pending:
            reply.fail(BrokerUnavailable("lost the broker connection before the answer arrived"))
