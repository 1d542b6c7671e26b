"""Queue and exchange names, and their idempotent declaration.

Quorum queues with a dead-letter exchange and a delivery limit, so a poison message ends
in `<queue>.dead` after a few tries instead of looping forever. `predict` is bounded with
overflow `reject-publish`: a full system nacks the publish and the gateway answers 503.

A dead prediction job is routed to two queues: `predict.dead` keeps it for replay (nobody
consumes it; `python -m services.worker replay-dead-letters` moves it back), and
`predict.dead.notices` tells the workers, which record the job as failed with the reason, so
a client polling its id sees `failed`, never `pending` forever.

`heatmap` carries heat-map requests (a client waiting on each). It is bounded like `predict`
(a full queue refuses with 503 rather than letting requests wait past every client's patience),
a request expires after `HEATMAP_REQUEST_TTL_S` unanswered, and one that keeps killing workers
is dropped at the delivery limit: there is no dead-letter queue, since a request is worth
nothing once its client has stopped waiting (it can ask again).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from shared.messaging.rabbitmq import CHANNEL_CLOSED_BY_BROKER
from shared.settings import Settings

# The pika channel under a Channel (only shared/messaging/rabbitmq.py imports pika).
RawChannel = Any

EVENT_MODEL_PUBLISHED = "model.published"
EVENT_MODEL_PROMOTED = "model.promoted"
EVENT_DATASET_CHANGED = "dataset.changed"
EVENT_TRAINING_PROGRESS = "training.progress"
EVENT_TRAINING_FINISHED = "training.finished"
# Heat-map requests waiting at most: far more than workers render in a client's wait (about
# 50 a second each), few enough that a flood is refused instead of answered too late.
HEATMAP_QUEUE_MAX_LENGTH = 200
# A request no worker took within this is dropped: its client (PREDICT_TIMEOUT_S) is gone.
HEATMAP_REQUEST_TTL_S = 60
# Published by workers after each batch: domain scores, flags and projections (drift).
EVENT_PREDICTIONS_SCORED = "predictions.scored"
# The drift queue keeps the newest events only: a window of recent predictions needs no older
# ones, and a stalled insights service must not let them pile up in the broker.
DRIFT_QUEUE_MAX_EVENTS = 1_000

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Topology:
    """Every name on the broker, prefixed with the settings' `broker_namespace`."""

    namespace: str
    predict_max_length: int
    delivery_limit: int
    # Whether `prepare` declares (Settings.declare_topology) or only checks what bootstrap declared.
    declares: bool = True

    @classmethod
    def from_settings(cls, settings: Settings) -> Topology:
        return cls(
            settings.broker_namespace,
            settings.predict_queue_max_length,
            settings.delivery_limit,
            settings.declare_topology,
        )

    @property
    def predict_queue(self) -> str:
        return f"{self.namespace}predict"

    @property
    def heatmap_queue(self) -> str:
        return f"{self.namespace}heatmap"

    @property
    def train_queue(self) -> str:
        return f"{self.namespace}train"

    @property
    def dataset_import_queue(self) -> str:
        """Staged labelled uploads for the trainer to import (the gateway cannot write datasets/)."""
        return f"{self.namespace}dataset-import"

    @property
    def dead_letter_exchange(self) -> str:
        return f"{self.namespace}dead-letter"

    @property
    def events_exchange(self) -> str:
        return f"{self.namespace}events"

    @property
    def insights_queue(self) -> str:
        return f"{self.namespace}insights.dataset-changed"

    @property
    def drift_queue(self) -> str:
        return f"{self.namespace}insights.predictions-scored"

    @staticmethod
    def dead_letter_queue(queue: str) -> str:
        return f"{queue}.dead"

    @staticmethod
    def dead_letter_notices_queue(queue: str) -> str:
        return f"{queue}.dead.notices"

    @property
    def exchanges(self) -> tuple[str, ...]:
        return (self.dead_letter_exchange, self.events_exchange)

    @property
    def queues(self) -> tuple[str, ...]:
        """Every queue `declare` makes."""
        work = (self.predict_queue, self.train_queue, self.dataset_import_queue)
        return (
            *work,
            *(self.dead_letter_queue(queue) for queue in work),
            self.dead_letter_notices_queue(self.predict_queue),
            self.heatmap_queue,
            self.insights_queue,
            self.drift_queue,
        )

    def prepare(self, channel: RawChannel) -> None:
        """What every service does at connect: declare everything, or, where bootstrap did and
        this service's broker user may not (`declares` False), check that it all exists.

        A missing queue or exchange closes the channel (CHANNEL_CLOSED_BY_BROKER, one of
        shared/messaging/rabbitmq.py's CONNECTION_ERRORS): the caller reconnects with backoff,
        as when the broker is away, until bootstrap has run.
        """
        if self.declares:
            self.declare(channel)
            return
        try:
            # Passive declarations need no permission: a user that may not configure can check.
            for exchange in self.exchanges:
                channel.exchange_declare(exchange, passive=True)
            for queue in self.queues:
                channel.queue_declare(queue, passive=True)
        except CHANNEL_CLOSED_BY_BROKER as error:
            log.error("the broker's topology is incomplete (%s): run `python -m services.bootstrap`", error)
            raise

    def declare(self, channel: RawChannel) -> None:
        """Declare everything; safe to call from every service at every connect."""
        channel.exchange_declare(self.dead_letter_exchange, "direct", durable=True)
        channel.exchange_declare(self.events_exchange, "topic", durable=True)
        self._declare_work_queue(channel, self.predict_queue, max_length=self.predict_max_length)
        notices = self.dead_letter_notices_queue(self.predict_queue)
        channel.queue_declare(notices, durable=True, arguments={"x-queue-type": "quorum"})
        channel.queue_bind(notices, self.dead_letter_exchange, routing_key=self.predict_queue)
        self._declare_work_queue(channel, self.train_queue, max_length=None)
        self._declare_work_queue(channel, self.dataset_import_queue, max_length=None)
        self._declare_heatmap_queue(channel)
        # Declared by everyone, not only by insights: a dataset change published while the
        # insights service is down must wait for it in this queue, not vanish.
        channel.queue_declare(self.insights_queue, durable=True, arguments={"x-queue-type": "quorum"})
        channel.queue_bind(self.insights_queue, self.events_exchange, routing_key=EVENT_DATASET_CHANGED)
        # Durable and declared by everyone too, so the drift window refills from the newest
        # events after an insights restart; bounded, dropping the oldest (drop-head), since
        # only recent predictions matter. Quorum, so a cluster node's loss does not break
        # every service's declare.
        drift_arguments = {"x-queue-type": "quorum", "x-max-length": DRIFT_QUEUE_MAX_EVENTS, "x-overflow": "drop-head"}
        channel.queue_declare(self.drift_queue, durable=True, arguments=drift_arguments)
        channel.queue_bind(self.drift_queue, self.events_exchange, routing_key=EVENT_PREDICTIONS_SCORED)

    def _declare_heatmap_queue(self, channel: RawChannel) -> None:
        arguments = {
            "x-queue-type": "quorum",
            "x-delivery-limit": self.delivery_limit,
            "x-max-length": HEATMAP_QUEUE_MAX_LENGTH,
            "x-overflow": "reject-publish",
            "x-message-ttl": HEATMAP_REQUEST_TTL_S * 1000,
        }
        channel.queue_declare(self.heatmap_queue, durable=True, arguments=arguments)

    def _declare_work_queue(self, channel: RawChannel, queue: str, max_length: int | None) -> None:
        dead_queue = self.dead_letter_queue(queue)
        channel.queue_declare(dead_queue, durable=True, arguments={"x-queue-type": "quorum"})
        channel.queue_bind(dead_queue, self.dead_letter_exchange, routing_key=queue)
        arguments: dict[str, object] = {
            "x-queue-type": "quorum",
            "x-dead-letter-exchange": self.dead_letter_exchange,
            "x-dead-letter-routing-key": queue,
            "x-delivery-limit": self.delivery_limit,
        }
        if max_length is not None:
            arguments |= {"x-max-length": max_length, "x-overflow": "reject-publish"}
        channel.queue_declare(queue, durable=True, arguments=arguments)
