"""The trainer service: consumes `train`, one run at a time, and follows it in the job record.

Requests that queue up during a run are coalesced into the next run. A request is acked
once its job record says "running": from then on the record, not the message, carries the
job, so a run may outlast the broker's consumer timeout. A trainer that dies mid-run finds
the job "running" at its next start and runs it again under the same version name.

Neither the store nor the broker going away ends the loop: a run that loses the store fails
with the reason, and its final record is written once the store is back (retried with capped,
jittered backoff), so a job is never left "running" by a live trainer; one stopped while it
waits leaves the job "running" for its next start to run again. A missed progress write is
only logged: the next one catches up.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from functools import partial
from typing import Any, TypeVar

from services.trainer.pipeline import run_training
from shared import metrics, training_jobs
from shared.backoff import Backoff
from shared.errors import MessageDecodeError, SkinLesionError, StorageUnavailable
from shared.messaging.channel import Channel
from shared.messaging.consumer import BrokerAddress, ConsumerLoop
from shared.messaging.delivery import Delivery
from shared.messaging.rabbitmq import CONNECTION_ERRORS, publish_event
from shared.messaging.schemas import Event, TrainRequest
from shared.messaging.topology import EVENT_TRAINING_FINISHED, EVENT_TRAINING_PROGRESS, Topology
from shared.ops_server import storage_state
from shared.settings import Settings
from shared.storage import ObjectStore

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 3
UNFINISHED = ("running", "evaluating")

T = TypeVar("T")


class ServiceStopping(SkinLesionError):
    """Raised out of a wait for a dependency when the service is asked to stop."""


def retry_until_done(
    what: str,
    action: Callable[[], T],
    stopping: threading.Event,
    *,
    errors: tuple[type[BaseException], ...] = (StorageUnavailable,),
    cap_s: float = 10.0,
) -> T:
    """Run `action` until it stops raising `errors`; raise ServiceStopping once `stopping` is set."""
    backoff = Backoff(cap_s=cap_s)
    while True:
        if stopping.is_set():
            raise ServiceStopping(f"stopped while trying to {what}")
        try:
            return action()
        except errors as error:
            delay_s = backoff.next()
            log.warning("cannot %s (%s); retrying in %.1fs", what, error, delay_s)
            stopping.wait(delay_s)


class TrainerService:
    def __init__(self, settings: Settings, store: ObjectStore) -> None:
        self.settings = settings
        self.store = store
        self.topology = Topology.from_settings(settings)
        self.stopping = threading.Event()
        self.busy = threading.Event()
        # One connection per take of requests: none idles through a run that may take an hour.
        self._requests = ConsumerLoop(
            "training requests",
            BrokerAddress(settings.amqp_url, settings.amqp_ca_file),
            self.topology,
            stopping=self.stopping,
            prefetch=1,
            backoff=Backoff(first_s=1.0, cap_s=30.0),
        )
        self.connected = self._requests.connected
        self._store_backoff = Backoff(first_s=1.0, cap_s=30.0)

    def readiness(self) -> tuple[bool, dict[str, str]]:
        """Ready when it can take a request: the broker connected (or let go for a run) and the store reachable."""
        if self.connected.is_set():
            broker = "ok"
        elif self.busy.is_set():
            broker = "released during a run"
        else:
            broker = "disconnected"
        storage = storage_state(self.store)
        checks = {"broker": broker, "storage": storage, "training": "busy" if self.busy.is_set() else "idle"}
        return broker != "disconnected" and storage == "ok", checks

    def run(self) -> None:
        """Resume interrupted jobs, then serve requests until `stopping`; no error ends the loop."""
        backoff = Backoff(first_s=1.0, cap_s=30.0)
        try:
            self._guarded(self._resume_interrupted, backoff)
            while not self.stopping.is_set():
                self._guarded(self._serve_requests, backoff)
        except ServiceStopping as stopped:
            log.info("%s", stopped)

    def _guarded(self, step: Callable[[], None], backoff: Backoff) -> None:
        """Run one step of the loop; log whatever it raises and back off before the next one."""
        try:
            step()
            backoff.reset()
        except ServiceStopping:
            raise
        except Exception:  # the loop outlives any one failure; /healthz reports its thread
            delay_s = backoff.next()
            log.exception("trainer loop step failed; going on in %.1fs", delay_s)
            self.stopping.wait(delay_s)

    def _resume_interrupted(self) -> None:
        recent = retry_until_done(
            "list training jobs", lambda: training_jobs.list_recent(self.store, 50), self.stopping
        )
        interrupted = [record["id"] for record in recent if record["status"] in UNFINISHED]
        if interrupted:
            log.info("resuming interrupted training jobs %s", interrupted)
            self._run_jobs(sorted(interrupted), epochs=None)

    def _serve_requests(self) -> None:
        job_ids, epochs = self._take_requests()
        if job_ids:
            self._run_jobs(job_ids, epochs)

    def _take_requests(self) -> tuple[list[str], int | None]:
        """Wait for a request, take every other queued one too, mark them running, ack."""
        taken: list[tuple[list[str], int | None]] = []
        if not self._requests.run_once(lambda channel: taken.append(self._take(channel))):
            # The broker is away (logged): the backoff paces retries, and a stop is not held up long.
            self.stopping.wait(self._requests.backoff.next())
        return taken[0] if taken else ([], None)

    def _take(self, channel: Channel) -> tuple[list[str], int | None]:
        first = self._wait_for_one(channel)
        if first is None:
            return [], None
        deliveries = [first]
        while (more := channel.get(self.topology.train_queue)) is not None:
            deliveries.append(more)
        job_ids, epochs, store_down = self._accept(channel, deliveries)
        if store_down:
            # The requests go back to the queue (on close); take them again once the store may be back.
            self.stopping.wait(self._store_backoff.next())
        else:
            self._store_backoff.reset()
        return job_ids, epochs

    def _wait_for_one(self, channel: Channel) -> Delivery | None:
        received: list[Delivery] = []
        consumer_tag = channel.consume(self.topology.train_queue, received.append)
        while not received and not self.stopping.is_set():
            channel.serve(1)
        channel.cancel(consumer_tag)
        return received[0] if received else None

    def _accept(self, channel: Channel, deliveries: list[Delivery]) -> tuple[list[str], int | None, bool]:
        """Mark each requested job running and ack it; (job ids, epochs, whether the store failed).

        A request the store cannot take now stays queued (requeued, unacked): it is not the
        request that is wrong. One that names no job or does not decode is dead-lettered.
        """
        job_ids, epochs, store_down = [], None, False
        for delivery in deliveries:
            try:
                request = TrainRequest.decode(delivery.body)
                record = training_jobs.load(self.store, request.job_id)
                if record["status"] not in training_jobs.FINISHED:
                    training_jobs.update(self.store, request.job_id, status="running")
            except StorageUnavailable as error:
                log.warning("requeueing a training request: %s", error)
                channel.requeue(delivery.tag)
                store_down = True
                continue
            except (MessageDecodeError, SkinLesionError) as error:
                log.warning("dead-lettering a training request: %s", error)
                channel.reject(delivery.tag)
                continue
            if record["status"] in training_jobs.FINISHED:
                log.info("job %s already finished; acking its repeat", request.job_id)
            else:
                job_ids.append(request.job_id)
                epochs = request.epochs if request.epochs is not None else epochs
            channel.ack(delivery.tag)
        return job_ids, epochs, store_down

    def _run_jobs(self, job_ids: list[str], epochs: int | None) -> None:
        """One training run answering every job in `job_ids` (the first names the version)."""
        primary = job_ids[0]
        started = time.time()
        attempts = 1 + max(self._read(job_id).get("attempts", 0) for job_id in job_ids)
        self._update_all(
            job_ids,
            status="running",
            attempts=attempts,
            coalesced_into=primary if len(job_ids) > 1 else None,
            timings={"started_at": started},
        )
        self.busy.set()
        try:
            if attempts > MAX_ATTEMPTS:
                raise SkinLesionError(f"gave up after {MAX_ATTEMPTS} interrupted attempts")
            outcome = run_training(
                self.settings,
                self.store,
                primary,
                epochs,
                on_progress=lambda progress: self._progress(job_ids, progress),
                on_event=self._publish_event,
            )
        except Exception as error:  # a failed run must be recorded whatever raised
            log.exception("training job %s failed", primary)
            outcome = {"status": "failed", "error": f"{type(error).__name__}: {error}"}
        finally:
            self.busy.clear()
        # Retried until the store takes it: a live trainer never leaves a finished run "running".
        self._update_all(job_ids, **outcome, timings={"finished_at": time.time()})
        metrics.TRAINING_RUNS.labels(outcome["status"]).inc()
        metrics.TRAINING_DURATION.observe(time.time() - started)
        self._publish_event(EVENT_TRAINING_FINISHED, {"jobs": job_ids, "status": outcome["status"]})

    def _progress(self, job_ids: list[str], progress: dict[str, Any]) -> None:
        status = "evaluating" if progress["stage"] in ("evaluating", "publishing") else "running"
        try:
            for job_id in job_ids:
                training_jobs.update(self.store, job_id, status=status, progress=progress)
        except StorageUnavailable as error:
            # Progress is a view of the run, not part of it: the next step writes it again.
            log.warning("skipped a progress update of job %s: %s", job_ids[0], error)
        self._publish_event(EVENT_TRAINING_PROGRESS, {"jobs": job_ids, **progress})

    def _read(self, job_id: str) -> dict[str, Any]:
        """A job's record, waiting for the store as long as it takes."""
        return retry_until_done(f"read job {job_id}", partial(training_jobs.load, self.store, job_id), self.stopping)

    def _update_all(self, job_ids: list[str], **changes: Any) -> None:
        """Write `changes` into every job's record, waiting for the store as long as it takes."""
        for job_id in job_ids:
            write = partial(training_jobs.update, self.store, job_id, **changes)
            retry_until_done(f"update job {job_id}", write, self.stopping)

    def _publish_event(self, name: str, data: dict[str, Any]) -> None:
        """Events are best effort: a broker hiccup must not fail a finished training run."""
        event = Event(name=name, event_id=f"{name}-{time.time_ns()}", occurred_at=time.time(), data=data)
        try:
            publish_event(
                self.settings.amqp_url,
                self.topology.events_exchange,
                event,
                routing_key=name,
                ca_file=self.settings.amqp_ca_file,
            )
        except (SkinLesionError, *CONNECTION_ERRORS) as error:
            log.warning("could not publish %s: %r", name, error)
