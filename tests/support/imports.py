"""Running the trainer's part of a dataset upload in-process: import the batches the gateway queued."""

from __future__ import annotations

from shared import dataset_staging
from shared.messaging.rabbitmq import open_channel
from shared.messaging.schemas import DatasetImportRequest
from shared.messaging.topology import Topology
from shared.settings import Settings
from shared.storage import ObjectStore


def import_queued(settings: Settings, store: ObjectStore) -> list[dataset_staging.ImportReport | None]:
    """Take every job on the `dataset-import` queue, import its batch as the trainer does, ack it."""
    queue = Topology.from_settings(settings).dataset_import_queue
    reports = []
    with open_channel(settings.amqp_url, timeout_s=10) as channel:
        while (delivery := channel.get(queue)) is not None:
            reports.append(dataset_staging.import_batch(store, DatasetImportRequest.decode(delivery.body).batch_id))
            channel.ack(delivery.tag)
    return reports
