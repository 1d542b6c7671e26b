"""The prediction worker's consume loop: micro-batches, inference, replies, acks.

Order per job: result stored -> reply sent -> ack. A worker that dies anywhere before the
ack leaves the job unacked, so the broker redelivers it to another worker; a redelivered
job whose result is already stored is answered from the store, not predicted twice.

A transient failure (the store or the model unavailable) does not give the job back to the
broker: every return spends one of its few deliveries, and an outage of a minute would
spend them all in seconds. The worker holds the batch instead, retrying with capped,
jittered backoff while it keeps serving the connection (heartbeats), and takes no more
jobs than its prefetch meanwhile. Only undecodable jobs, and jobs that keep killing
workers, reach the dead-letter queue.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from services.worker.dead_letters import DeadLetterRecorder
from services.worker.heatmaps import HeatmapRenderer
from services.worker.model_holder import ModelHolder
from shared import metrics, prediction_records
from shared.backoff import Backoff
from shared.errors import BadInput, MessageDecodeError, NotFound, TransientError
from shared.image_quality import RETAKE_REASONS, ImageQuality, assess
from shared.images import model_input_for_key
from shared.messaging.batches import BatchCollector
from shared.messaging.channel import Channel
from shared.messaging.consumer import BrokerAddress, ConsumerLoop
from shared.messaging.delivery import Delivery
from shared.messaging.schemas import Event, PredictionJob, PredictionResult
from shared.messaging.topology import EVENT_MODEL_PROMOTED, EVENT_PREDICTIONS_SCORED, Topology
from shared.serving import domain as domains
from shared.serving.runtime import ModelOutputs, ServingModel
from shared.settings import Settings
from shared.storage import ObjectStore

log = logging.getLogger(__name__)

# Workers switch models on `model.promoted`; this periodic look at the alias is the safety
# net for an event lost while the worker was disconnected or the publisher failed.
ALIAS_CHECK_INTERVAL_S = 30.0
# Holding a batch through an outage, and reconnecting: first retry within this, doubling
# up to the cap (shared.backoff).
RETRY_FIRST_DELAY_S = 0.5
RETRY_MAX_DELAY_S = 5.0


@dataclass
class Job:
    """One delivered prediction job on its way to an answer."""

    delivery: Delivery
    job: PredictionJob | None = None
    pixels: np.ndarray | None = None
    result: PredictionResult | None = None
    # What the drift monitor hears of this prediction (EVENT_PREDICTIONS_SCORED), once scored.
    scored: dict[str, object] | None = None
    stored: bool = False
    poison: bool = False

    @property
    def finished(self) -> bool:
        """Ready to settle: answered and stored, or bound for the dead-letter queue."""
        return self.stored or self.poison


class PredictionConsumer:
    """Consumes `predict`, batching up to `worker_max_batch` jobs per model run."""

    def __init__(
        self,
        settings: Settings,
        store: ObjectStore,
        models: ModelHolder,
        *,
        stopping: threading.Event | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.models = models
        self.topology = Topology.from_settings(settings)
        self.dead_letters = DeadLetterRecorder(store, self.topology)
        self.stopping = stopping if stopping is not None else threading.Event()
        self._loop = ConsumerLoop(
            "prediction worker",
            BrokerAddress(settings.amqp_url, settings.amqp_ca_file),
            self.topology,
            stopping=self.stopping,
            prefetch=2 * settings.worker_max_batch,
            backoff=Backoff(RETRY_FIRST_DELAY_S, RETRY_MAX_DELAY_S),
        )
        self.connected = self._loop.connected
        self._jobs: BatchCollector | None = None
        # Monotonic time of the consume loop's last turn (see `last_tick`).
        self._last_turn = time.monotonic()
        # Store reads, image decoding and result writes run in parallel; the channel stays on
        # the main thread, which owns the connection.
        self._io_pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="worker-io")
        self.heatmaps = HeatmapRenderer(settings, store, self.topology, self._io_pool)
        self._max_wait_s = settings.worker_max_wait_ms / 1000.0
        # Every reason's series exists from the start: the dashboard shows 0 hints, not "no data".
        for reason in RETAKE_REASONS:
            metrics.RETAKE_HINTS.labels(reason)

    @property
    def last_tick(self) -> float:
        """Monotonic time the loop last turned or tried to connect: /healthz fails when it stops."""
        return max(self._last_turn, self._loop.last_attempt)

    def run(self) -> None:
        """Consume until `stopping` is set, reconnecting with backoff whatever goes wrong."""
        try:
            self._loop.run(self._consume, setup=self._subscribe)
        finally:
            self._io_pool.shutdown(wait=True)

    def _subscribe(self, channel: Channel) -> None:
        self._last_turn = time.monotonic()
        self._jobs = BatchCollector(
            channel,
            self.topology.predict_queue,
            max_size=self.settings.worker_max_batch,
            max_wait_s=self._max_wait_s,
        )
        self.dead_letters.subscribe(channel)
        self.heatmaps.subscribe(channel)
        channel.subscribe_to_events(self.topology.events_exchange, EVENT_MODEL_PROMOTED, self._on_model_event)

    def _consume(self, channel: Channel) -> None:
        jobs = self._jobs
        self.models.follow_production()
        log.info("consuming %s", self.topology.predict_queue)
        next_alias_check = time.monotonic() + ALIAS_CHECK_INTERVAL_S
        while not self.stopping.is_set():
            self._last_turn = time.monotonic()
            channel.serve(0.2 if not len(jobs) else 0)
            self.dead_letters.record_pending(channel)
            if time.monotonic() >= next_alias_check:
                self.models.follow_production()
                next_alias_check = time.monotonic() + ALIAS_CHECK_INTERVAL_S
            # Micro-batching: jobs that arrived while the last batch ran are already here;
            # wait at most max_wait for more before running what we have.
            batch = jobs.next_batch()
            if batch:
                self._handle_batch(channel, [Job(delivery) for delivery in batch])
        # Stopping: the batch in hand is done; hand the rest back for other workers.
        log.info("stopped; returned %d prefetched jobs to the queue", jobs.return_all())

    def _on_model_event(self, delivery: Delivery) -> None:
        try:
            event = Event.decode(delivery.body)
            self.models.swap_in_background(str(event.data["version"]))
        except (MessageDecodeError, KeyError) as error:
            log.warning("ignoring malformed model event: %s", error)

    def _handle_batch(self, channel: Channel, batch: list[Job]) -> None:
        """Carry every job of the batch to an answer, holding it through transient outages."""
        backoff = Backoff(RETRY_FIRST_DELAY_S, RETRY_MAX_DELAY_S)
        waiting = batch
        while True:
            self._advance(waiting)
            waiting = [delivery for delivery in batch if not delivery.finished]
            if not waiting or self.stopping.is_set():
                break
            metrics.JOBS_HELD.inc(len(waiting))
            delay_s = backoff.next()
            log.warning("%d jobs wait for the store or the model; retrying in %.1fs", len(waiting), delay_s)
            channel.serve_for(delay_s, self.stopping, tick=self._tick)
        for delivery in batch:
            self._settle(channel, delivery)
        self._announce_scores(channel, batch)

    def _tick(self) -> None:
        self._last_turn = time.monotonic()

    def _announce_scores(self, channel: Channel, batch: list[Job]) -> None:
        """Tell the drift monitor (services/insights/drift.py) what was scored, one event per
        model version and batch. Unconfirmed, like every event: a lost one costs the monitor a
        few of the hundreds of predictions in its window, never an answer."""
        by_version: dict[str, list[dict[str, object]]] = {}
        for delivery in batch:
            if delivery.stored and delivery.scored is not None:
                by_version.setdefault(delivery.result.model_version, []).append(delivery.scored)
        for version, predictions in by_version.items():
            event = Event(
                name=EVENT_PREDICTIONS_SCORED,
                event_id=uuid.uuid4().hex,
                occurred_at=time.time(),
                data={"model_version": version, "predictions": predictions},
            )
            channel.publish(
                self.topology.events_exchange, EVENT_PREDICTIONS_SCORED, event, mandatory=False, persistent=False
            )

    def _advance(self, deliveries: list[Job]) -> None:
        """Take each job as far as it goes: decoded and loaded, predicted, stored."""
        to_prepare = [delivery for delivery in deliveries if delivery.pixels is None and delivery.result is None]
        list(self._io_pool.map(self._prepare, to_prepare))
        runnable = [d for d in deliveries if d.pixels is not None and d.result is None and not d.poison]
        if runnable:
            self._predict(self.models.current, runnable)
        to_store = [d for d in deliveries if d.result is not None and not d.stored]
        list(self._io_pool.map(self._store_result, to_store))

    def _predict(self, model: ServingModel, runnable: list[Job]) -> None:
        started = time.time()
        pixels = np.stack([delivery.pixels for delivery in runnable])
        try:
            with metrics.INFERENCE_DURATION.time():
                outputs = model.run(pixels)
        except TransientError:
            log.exception("inference failed; holding the batch")
            return
        metrics.BATCH_SIZE.observe(len(runnable))
        probabilities = model.probabilities(outputs)
        judgements = model.judge_domain(outputs)
        projections = model.domain.project(outputs.block_statistics) if judgements is not None else None
        for index, (delivery, probability) in enumerate(zip(runnable, probabilities, strict=True)):
            metrics.QUEUE_WAIT.observe(max(started - delivery.job.submitted_at, 0.0))
            quality = assess(delivery.pixels)
            judgement = judgements[index] if judgements is not None else None
            delivery.result = self._result(
                delivery.job, float(probability), model, quality, judgement, _activation(outputs, index)
            )
            if judgement is not None:
                delivery.scored = domains.drift_sample(float(probability), judgement, projections[index])
            delivery.pixels = None

    def _prepare(self, delivery: Job) -> None:
        """Decode the job and load its pixels; record the outcome on the delivery."""
        try:
            if delivery.job is None:
                delivery.job = PredictionJob.decode(delivery.delivery.body)
            if delivery.delivery.redelivered and self._reuse_stored_result(delivery):
                return
            key = delivery.job.image_key
            # A large upload's job points at its model-sized copy (read as it is), others at the upload.
            delivery.pixels = model_input_for_key(
                key,
                self.store.get(key),
                max_bytes=self.settings.max_upload_bytes,
                max_pixels=self.settings.max_image_pixels,
            )
        except MessageDecodeError:
            log.exception("undecodable job; dead-lettering it")
            delivery.poison = True
        except (BadInput, NotFound) as error:
            delivery.result = self._failure(delivery.job, error)
        except TransientError as error:
            log.warning("cannot load job %s yet: %s", delivery.job.job_id if delivery.job else "?", error)
        except Exception:  # a decoder crash must not take the worker (and the batch) down
            log.exception("unexpected failure preparing a job; dead-lettering it")
            delivery.poison = True

    def _reuse_stored_result(self, delivery: Job) -> bool:
        stored = prediction_records.read_result(self.store, delivery.job.job_id)
        if stored is None:
            return False
        delivery.result = stored
        delivery.stored = True
        return True

    @staticmethod
    def _result(
        job: PredictionJob,
        probability: float,
        model: ServingModel,
        quality: ImageQuality,
        judgement: domains.DomainJudgement | None,
        class_activation: list[list[float]] | None,
    ) -> PredictionResult:
        threshold, own = model.threshold_for(job.collection)
        label = model.label(probability, threshold)
        metrics.PREDICTIONS.labels(label).inc()
        metrics.PROBABILITY.labels(model.version).observe(probability)
        if quality.retake_reason is not None:
            metrics.RETAKE_HINTS.labels(quality.retake_reason).inc()
        if judgement is not None:
            _count_domain(model.version, judgement)
        return PredictionResult(
            job_id=job.job_id,
            label=label,
            probability_malignant=round(probability, 6),
            threshold=threshold,
            threshold_collection=own,
            model_version=model.version,
            submitted_at=job.submitted_at,
            completed_at=time.time(),
            quality=quality.public(),
            domain=judgement.public() if judgement is not None else domains.not_available(model.version),
            class_activation=class_activation,
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

    def _store_result(self, delivery: Job) -> None:
        """Store the result, unless the job was deleted (DELETE /predictions/{id}) meanwhile
        (shared/prediction_records.py). Either way the job is settled once the store answered."""
        try:
            prediction_records.store_result(self.store, delivery.result)
        except TransientError as error:
            log.warning("cannot store the result of %s yet: %s", delivery.job.job_id, error)
            return
        delivery.stored = True

    def _settle(self, channel: Channel, delivery: Job) -> None:
        tag = delivery.delivery.tag
        if delivery.poison:
            metrics.JOBS_PROCESSED.labels("dead_lettered").inc()
            channel.reject(tag)
            return
        if not delivery.stored:  # stopping while the store is down: another worker takes it
            metrics.JOBS_PROCESSED.labels("requeued").inc()
            channel.requeue(tag)
            return
        channel.reply(delivery.delivery, delivery.result)
        metrics.JOBS_PROCESSED.labels("failed" if delivery.result.error else "predicted").inc()
        channel.ack(tag)


def _activation(outputs: ModelOutputs, index: int) -> list[list[float]] | None:
    """One image's 7x7 class activation, rounded for the stored result (None: no such output)."""
    if outputs.class_activation is None:
        return None
    return np.round(outputs.class_activation[index].astype(np.float64), 4).tolist()


def _count_domain(version: str, judgement: domains.DomainJudgement) -> None:
    metrics.DOMAIN_SCORE.labels(version).observe(judgement.score)
    if judgement.unlike_training:
        metrics.DOMAIN_WARNINGS.labels(version, "unlike_training").inc()
    if judgement.not_dermoscopy:
        metrics.DOMAIN_WARNINGS.labels(version, "not_dermoscopy").inc()
