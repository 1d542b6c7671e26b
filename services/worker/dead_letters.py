"""Dead prediction jobs: recorded as failed for the client, replayed on an operator's command.

The dead-letter exchange routes a dead job to `predict.dead` (kept for replay) and to
`predict.dead.notices` (consumed here). The recorder writes the job's result as failed with
the broker's reason, so `GET /predictions/{id}` says `failed` instead of `pending` forever.
`replay` moves the jobs in `predict.dead` back to `predict` and clears those failures.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from shared import prediction_records
from shared.backoff import Backoff
from shared.errors import MessageDecodeError, PublishRefused, TransientError
from shared.messaging.channel import Channel
from shared.messaging.dead_letters import drain_present, failure_reason_code, replayable_headers
from shared.messaging.delivery import Delivery
from shared.messaging.rabbitmq import open_channel
from shared.messaging.schemas import PredictionJob, PredictionResult
from shared.messaging.topology import Topology
from shared.storage import ObjectStore

log = logging.getLogger(__name__)

DEAD_LETTERED = "dead_lettered"
RETRY_FIRST_DELAY_S = 1.0
RETRY_MAX_DELAY_S = 10.0
# Why the broker dead-lettered a job (its `x-first-death-reason` header), for the client.
_REASONS = {
    "rejected": "no worker could read this job (an undecodable message, or a crash while decoding its image)",
    "delivery_limit": "workers stopped while processing this job on every delivery it was allowed",
}


def failure_reason(delivery: Delivery) -> str:
    reason = failure_reason_code(delivery)
    explanation = _REASONS.get(str(reason), f"the broker gave it up ({reason or 'no reason given'})")
    return f"{explanation}; an operator can replay it (`replay-dead-letters`)"


class DeadLetterRecorder:
    """Consumes dead-letter notices on the worker's channel; records each job as failed.

    Notices are taken by the channel's callback and recorded from the consume loop
    (`record_pending`), where a store outage only delays them: they stay unacked and are
    retried with backoff, so none is lost and none spins.
    """

    def __init__(self, store: ObjectStore, topology: Topology) -> None:
        self._store = store
        self._queue = topology.dead_letter_notices_queue(topology.predict_queue)
        self._pending: list[Delivery] = []
        self._retry_at = 0.0
        self._backoff = Backoff(RETRY_FIRST_DELAY_S, RETRY_MAX_DELAY_S)

    def subscribe(self, channel: Channel) -> None:
        self._pending.clear()  # tags of an earlier channel are void; the broker redelivers
        channel.consume(self._queue, self._pending.append)

    def record_pending(self, channel: Channel) -> None:
        """Record what is pending and ack it; on a store outage, try again later."""
        if not self._pending or time.monotonic() < self._retry_at:
            return
        while self._pending:
            notice = self._pending[0]
            try:
                record_failure(self._store, notice.body, failure_reason(notice))
            except TransientError as error:
                delay_s = self._backoff.next()
                log.warning("cannot record a dead job yet (%s); retrying in %.1fs", error, delay_s)
                self._retry_at = time.monotonic() + delay_s
                return
            channel.ack(notice.tag)
            self._pending.pop(0)
        self._backoff.reset()


def record_failure(store: ObjectStore, body: bytes, reason: str) -> None:
    """Write a dead job's result as failed, unless it has a result already."""
    try:
        job = PredictionJob.decode(body)
    except MessageDecodeError as error:
        log.warning("a dead job without a readable id cannot be recorded: %s", error)
        return
    failure = PredictionResult(
        job_id=job.job_id,
        submitted_at=job.submitted_at,
        completed_at=time.time(),
        error={"code": DEAD_LETTERED, "message": reason},
    )
    # Not over an answer given before it died (its ack lost), nor for a job deleted on request.
    if prediction_records.record_failure(store, failure):
        log.warning("job %s dead-lettered: %s", job.job_id, reason)


def replay(amqp_url: str, store: ObjectStore, topology: Topology, *, ca_file: Path | None = None) -> dict[str, int]:
    """Move every job now in `predict.dead` back to `predict`; return counts by outcome.

    Each job's dead-letter failure record is removed first, so its id reads `pending`
    again; the job goes back without `reply_to` (whoever waited is long gone). Undecodable
    messages stay in the dead-letter queue. Jobs that die again are not replayed twice in
    one run: only the messages present at the start are taken.
    """
    dead_queue = topology.dead_letter_queue(topology.predict_queue)
    counts = {"replayed": 0, "answered": 0, "kept": 0}
    with open_channel(amqp_url, topology=topology, confirms=True, timeout_s=30, ca_file=ca_file) as channel:
        for outcome in drain_present(channel, dead_queue, lambda dead: _replay_one(channel, store, topology, dead)):
            counts[outcome] += 1
    return counts


def _replay_one(channel: Channel, store: ObjectStore, topology: Topology, dead: Delivery) -> str:
    """Replay one dead job: "replayed", "answered" (it has a real result; dropped) or "kept"."""
    try:
        job = PredictionJob.decode(dead.body)
    except MessageDecodeError:
        log.warning("keeping an undecodable message in the dead-letter queue")
        return "kept"
    result = prediction_records.read_result(store, job.job_id)
    failure = result if result is not None and _is_dead_letter_failure(result) else None
    if result is not None and failure is None:
        return "answered"
    if failure is not None:
        prediction_records.remove_result(store, job.job_id)
    try:
        channel.republish(topology.predict_queue, dead, headers=replayable_headers(dead))
    except PublishRefused:
        log.warning("the predict queue refused job %s; it stays dead", job.job_id)
        if failure is not None:
            prediction_records.record_failure(store, failure)
        return "kept"
    return "replayed"


def _is_dead_letter_failure(result: PredictionResult) -> bool:
    return (result.error or {}).get("code") == DEAD_LETTERED
