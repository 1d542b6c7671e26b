"""The trainer service: consumes `train`, one run at a time, and follows it in the job record.

Requests that queue up during a run are coalesced into the next run. A request is acked
once its job record says "running": from then on the record, not the message, carries the
job, so a run may outlast the broker's consumer timeout. A trainer that dies mid-run finds
the job "running" at its next start and runs it again under the same version name.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from pika.adapters.blocking_connection import BlockingChannel, BlockingConnection

from services.trainer.pipeline import quiet_numbers, run_training
from shared import metrics, training_jobs
from shared.errors import MessageDecodeError, SkinLesionError
from shared.messaging.rabbitmq import CONNECTION_ERRORS, close_quietly, connect, publish_event
from shared.messaging.schemas import Event, TrainRequest
from shared.messaging.topology import EVENT_TRAINING_FINISHED, EVENT_TRAINING_PROGRESS, Topology
from shared.settings import Settings
from shared.storage import ObjectStore

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 3
UNFINISHED = ("running", "evaluating")


class TrainerService:
    def __init__(self, settings: Settings, store: ObjectStore) -> None:
        self.settings = settings
        self.store = store
        self.topology = Topology.from_settings(settings)
        self.stopping = threading.Event()
        self.connected = threading.Event()
        self.busy = threading.Event()

    def run(self) -> None:
        interrupted = [r["id"] for r in training_jobs.list_recent(self.store, 50) if r["status"] in UNFINISHED]
        if interrupted:
            log.info("resuming interrupted training jobs %s", interrupted)
            self._run_jobs(sorted(interrupted), epochs=None)
        while not self.stopping.is_set():
            job_ids, epochs = self._take_requests()
            if job_ids:
                self._run_jobs(job_ids, epochs)

    def _take_requests(self) -> tuple[list[str], int | None]:
        """Wait for a request, take every other queued one too, mark them running, ack."""
        connection: BlockingConnection | None = None
        try:
            connection = connect(self.settings.amqp_url, timeout_s=30)
            channel = connection.channel()
            self.topology.declare(channel)
            channel.basic_qos(prefetch_count=1)
            self.connected.set()
            first = self._wait_for_one(connection, channel)
            if first is None:
                return [], None
            deliveries = [first]
            while (got := channel.basic_get(self.topology.train_queue))[0] is not None:
                deliveries.append((got[0].delivery_tag, got[2]))
            return self._accept(channel, deliveries)
        except CONNECTION_ERRORS as error:
            log.warning("broker connection lost (%r); reconnecting", error)
            self.stopping.wait(2.0)
            return [], None
        except SkinLesionError as error:
            log.warning("cannot take training requests: %s", error)
            self.stopping.wait(2.0)
            return [], None
        finally:
            self.connected.clear()
            # No connection idles through a run that may take an hour.
            close_quietly(connection)

    def _wait_for_one(self, connection: BlockingConnection, channel: BlockingChannel) -> tuple[int, bytes] | None:
        received: list[tuple[int, bytes]] = []
        tag = channel.basic_consume(
            self.topology.train_queue, lambda _ch, method, _props, body: received.append((method.delivery_tag, body))
        )
        while not received and not self.stopping.is_set():
            connection.process_data_events(time_limit=1)
        channel.basic_cancel(tag)
        return received[0] if received else None

    def _accept(self, channel: BlockingChannel, deliveries: list[tuple[int, bytes]]) -> tuple[list[str], int | None]:
        job_ids, epochs = [], None
        for delivery_tag, body in deliveries:
            try:
                request = TrainRequest.decode(body)
                record = training_jobs.load(self.store, request.job_id)
            except (MessageDecodeError, SkinLesionError) as error:
                log.warning("dead-lettering a training request: %s", error)
                channel.basic_reject(delivery_tag, requeue=False)
                continue
            if record["status"] in training_jobs.FINISHED:
                log.info("job %s already finished; acking its repeat", request.job_id)
            else:
                training_jobs.update(self.store, request.job_id, status="running")
                job_ids.append(request.job_id)
                epochs = request.epochs if request.epochs is not None else epochs
            channel.basic_ack(delivery_tag)
        return job_ids, epochs

    def _run_jobs(self, job_ids: list[str], epochs: int | None) -> None:
        """One training run answering every job in `job_ids` (the first names the version)."""
        primary = job_ids[0]
        started = time.time()
        self.busy.set()
        attempts = 1 + max(training_jobs.load(self.store, job_id).get("attempts", 0) for job_id in job_ids)
        self._update_all(
            job_ids,
            status="running",
            attempts=attempts,
            coalesced_into=primary if len(job_ids) > 1 else None,
            timings={"started_at": started},
        )
        try:
            if attempts > MAX_ATTEMPTS:
                raise SkinLesionError(f"gave up after {MAX_ATTEMPTS} interrupted attempts")
            outcome = run_training(
                self.settings,
                self.store,
                primary,
                epochs,
                on_progress=lambda stage, epoch, total, record: self._progress(job_ids, stage, epoch, total, record),
                on_event=self._publish_event,
            )
        except Exception as error:  # a failed run must be recorded whatever raised
            log.exception("training job %s failed", primary)
            outcome = {"status": "failed", "error": f"{type(error).__name__}: {error}"}
        finally:
            self.busy.clear()
        self._update_all(job_ids, **outcome, timings={"finished_at": time.time()})
        metrics.TRAINING_RUNS.labels(outcome["status"]).inc()
        metrics.TRAINING_DURATION.observe(time.time() - started)
        self._publish_event(EVENT_TRAINING_FINISHED, {"jobs": job_ids, "status": outcome["status"]})

    def _progress(self, job_ids: list[str], stage: str, epoch: int, total: int, record: dict[str, Any]) -> None:
        progress = {"stage": stage, "epoch": epoch, "epochs": total, "metrics": quiet_numbers(record)}
        status = "evaluating" if stage == "evaluating" else "running"
        self._update_all(job_ids, status=status, progress=progress)
        self._publish_event(EVENT_TRAINING_PROGRESS, {"jobs": job_ids, **progress})

    def _update_all(self, job_ids: list[str], **changes: Any) -> None:
        for job_id in job_ids:
            training_jobs.update(self.store, job_id, **changes)

    def _publish_event(self, name: str, data: dict[str, Any]) -> None:
        """Events are best effort: a broker hiccup must not fail a finished training run."""
        event = Event(name=name, event_id=f"{name}-{time.time_ns()}", occurred_at=time.time(), data=data)
        try:
            publish_event(self.settings.amqp_url, self.topology.events_exchange, event, routing_key=name)
        except SkinLesionError as error:
            log.warning("could not publish %s: %s", name, error)
