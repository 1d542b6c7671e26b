"""The prediction worker's consume loop: micro-batches, inference, replies, acks.

Order per job: result stored -> reply sent -> ack. A worker that dies anywhere before the
ack leaves the job unacked, so the broker redelivers it to another worker; a redelivered
job whose result is already stored is answered from the store, not predicted twice.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import pika
from pika.adapters.blocking_connection import BlockingChannel, BlockingConnection
from pika.spec import Basic, BasicProperties

from services.worker.models import ModelHolder
from shared import metrics
from shared.errors import BadInput, MessageDecodeError, NotFound, TransientError
from shared.images import model_input_from_bytes
from shared.messaging.rabbitmq import CONNECTION_ERRORS, close_quietly, connect
from shared.messaging.schemas import CONTENT_TYPE, Event, PredictionJob, PredictionResult
from shared.messaging.topology import EVENT_MODEL_PROMOTED, Topology
from shared.model.serving import ServingModel
from shared.settings import Settings
from shared.storage import ObjectStore, get_json, layout, put_json

log = logging.getLogger(__name__)

# Workers switch models on `model.promoted`; this periodic look at the alias is the safety
# net for an event lost while the worker was disconnected or the publisher failed.
ALIAS_CHECK_INTERVAL_S = 30.0


@dataclass
class Delivery:
    method: Basic.Deliver
    properties: BasicProperties
    body: bytes
    job: PredictionJob | None = None
    pixels: np.ndarray | None = None
    result: PredictionResult | None = None
    requeue: bool = False


class PredictionConsumer:
    """Consumes `predict`, batching up to `worker_max_batch` jobs per model run."""

    def __init__(self, settings: Settings, store: ObjectStore, models: ModelHolder) -> None:
        self.settings = settings
        self.store = store
        self.models = models
        self.topology = Topology.from_settings(settings)
        self.stopping = threading.Event()
        self.connected = threading.Event()
        # Store reads, image decoding and result writes run in parallel; pika stays on
        # the main thread, which owns the connection.
        self._io_pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="worker-io")
        self._max_wait_s = settings.worker_max_wait_ms / 1000.0

    def run(self) -> None:
        """Consume until `stopping` is set, reconnecting with backoff when the broker goes."""
        while not self.stopping.is_set():
            connection = None
            try:
                connection = connect(self.settings.amqp_url, timeout_s=3600 * 24 * 365)
                self._consume(connection)
            except CONNECTION_ERRORS as error:
                log.warning("lost the broker connection (%r); reconnecting", error)
                self.connected.clear()
                self.stopping.wait(1.0)
            finally:
                close_quietly(connection)
        self._io_pool.shutdown(wait=True)

    def _consume(self, connection: BlockingConnection) -> None:
        channel = connection.channel()
        self.topology.declare(channel)
        channel.basic_qos(prefetch_count=2 * self.settings.worker_max_batch)
        buffer: list[Delivery] = []
        channel.basic_consume(
            self.topology.predict_queue,
            lambda _channel, method, properties, body: buffer.append(Delivery(method, properties, body)),
        )
        self._subscribe_to_model_events(channel)
        self.connected.set()
        self.models.follow_production()
        log.info("consuming %s", self.topology.predict_queue)
        next_alias_check = time.monotonic() + ALIAS_CHECK_INTERVAL_S
        while not self.stopping.is_set():
            connection.process_data_events(time_limit=0.2 if not buffer else 0)
            if time.monotonic() >= next_alias_check:
                self.models.follow_production()
                next_alias_check = time.monotonic() + ALIAS_CHECK_INTERVAL_S
            if not buffer:
                continue
            # Micro-batching: jobs that arrived while the last batch ran are already here;
            # wait at most max_wait for more before running what we have.
            deadline = time.monotonic() + self._max_wait_s
            while len(buffer) < self.settings.worker_max_batch and time.monotonic() < deadline:
                connection.process_data_events(time_limit=max(deadline - time.monotonic(), 0))
            batch = buffer[: self.settings.worker_max_batch]
            del buffer[: len(batch)]
            self._handle_batch(channel, batch)
        # Stopping: the batch in hand is done; hand the rest back for other workers.
        for delivery in buffer:
            channel.basic_nack(delivery.method.delivery_tag, requeue=True)
        log.info("stopped; returned %d prefetched jobs to the queue", len(buffer))

    def _subscribe_to_model_events(self, channel: BlockingChannel) -> None:
        declared = channel.queue_declare("", exclusive=True, auto_delete=True)
        queue = declared.method.queue
        channel.queue_bind(queue, self.topology.events_exchange, routing_key=EVENT_MODEL_PROMOTED)
        channel.basic_consume(queue, self._on_model_event, auto_ack=True)

    def _on_model_event(
        self, _channel: BlockingChannel, _method: Basic.Deliver, _properties: BasicProperties, body: bytes
    ) -> None:
        try:
            event = Event.decode(body)
            self.models.swap_in_background(str(event.data["version"]))
        except (MessageDecodeError, KeyError) as error:
            log.warning("ignoring malformed model event: %s", error)

    def _handle_batch(self, channel: BlockingChannel, batch: list[Delivery]) -> None:
        started = time.time()
        list(self._io_pool.map(self._prepare, batch))
        model = self.models.current
        runnable = [delivery for delivery in batch if delivery.pixels is not None]
        if runnable:
            for delivery in runnable:
                metrics.QUEUE_WAIT.observe(max(started - delivery.job.submitted_at, 0.0))
            self._predict(model, runnable)
        list(self._io_pool.map(self._store_result, batch))
        for delivery in batch:
            self._settle(channel, delivery)

    def _predict(self, model: ServingModel, runnable: list[Delivery]) -> None:
        pixels = np.stack([delivery.pixels for delivery in runnable])
        try:
            with metrics.INFERENCE_DURATION.time():
                probabilities = model.predict(pixels)
        except TransientError:
            log.exception("inference failed; requeueing the batch")
            for delivery in runnable:
                delivery.requeue = True
            return
        metrics.BATCH_SIZE.observe(len(runnable))
        for delivery, probability in zip(runnable, probabilities, strict=True):
            delivery.result = self._result(delivery.job, float(probability), model)

    def _prepare(self, delivery: Delivery) -> None:
        """Decode the job and load its pixels; record the outcome on the delivery."""
        try:
            delivery.job = PredictionJob.decode(delivery.body)
            if delivery.method.redelivered and self._reuse_stored_result(delivery):
                return
            data = self.store.get(delivery.job.image_key)
            delivery.pixels = model_input_from_bytes(
                data, max_bytes=self.settings.max_upload_bytes, max_pixels=self.settings.max_image_pixels
            )
        except MessageDecodeError:
            log.exception("undecodable job; dead-lettering it")
        except (BadInput, NotFound) as error:
            delivery.result = self._failure(delivery.job, error)
        except TransientError:
            log.exception("transient failure preparing job; requeueing it")
            delivery.requeue = True

    def _reuse_stored_result(self, delivery: Delivery) -> bool:
        try:
            stored = get_json(self.store, layout.prediction_result(delivery.job.job_id))
        except NotFound:
            return False
        delivery.result = PredictionResult(**stored)
        return True

    def _result(self, job: PredictionJob, probability: float, model: ServingModel) -> PredictionResult:
        label = model.label(probability)
        metrics.PREDICTIONS.labels(label).inc()
        metrics.PROBABILITY.observe(probability)
        return PredictionResult(
            job_id=job.job_id,
            label=label,
            probability_malignant=round(probability, 6),
            threshold=model.threshold,
            model_version=model.version,
            submitted_at=job.submitted_at,
            completed_at=time.time(),
        )

    @staticmethod
    def _failure(job: PredictionJob, error: Exception) -> PredictionResult:
        code = getattr(error, "code", "error")
        return PredictionResult(
            job_id=job.job_id,
            submitted_at=job.submitted_at,
            completed_at=time.time(),
            error={"code": code, "message": str(error)},
        )

    def _store_result(self, delivery: Delivery) -> None:
        if delivery.result is None or delivery.requeue:
            return
        try:
            put_json(self.store, layout.prediction_result(delivery.job.job_id), dataclasses.asdict(delivery.result))
        except TransientError:
            log.exception("cannot store result of %s; requeueing it", delivery.job.job_id)
            delivery.requeue = True

    def _settle(self, channel: BlockingChannel, delivery: Delivery) -> None:
        tag = delivery.method.delivery_tag
        if delivery.requeue:
            metrics.JOBS_PROCESSED.labels("requeued").inc()
            channel.basic_nack(tag, requeue=True)
            return
        if delivery.result is None:
            metrics.JOBS_PROCESSED.labels("dead_lettered").inc()
            channel.basic_reject(tag, requeue=False)
            return
        reply_to = delivery.properties.reply_to
        if reply_to:
            channel.basic_publish(
                "",
                reply_to,
                delivery.result.encode(),
                pika.BasicProperties(
                    correlation_id=delivery.properties.correlation_id,
                    message_id=delivery.result.job_id,
                    content_type=CONTENT_TYPE,
                ),
            )
        metrics.JOBS_PROCESSED.labels("failed" if delivery.result.error else "predicted").inc()
        channel.basic_ack(tag)
