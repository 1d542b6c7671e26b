"""Running the trainer's part of a dataset upload in-process: import the batches the gateway queued."""

from __future__ import annotations

import pika

from shared import dataset_staging
from shared.messaging.schemas import DatasetImportRequest
from shared.messaging.topology import Topology
from shared.settings import Settings
from shared.storage import ObjectStore


def import_queued(settings: Settings, store: ObjectStore) -> list[dataset_staging.ImportReport | None]:
    """Take every job on the `dataset-import` queue, import its batch as the trainer does, ack it."""
    queue = Topology.from_settings(settings).dataset_import_queue
    connection = pika.BlockingConnection(pika.URLParameters(settings.amqp_url))
    reports = []
    try:
        channel = connection.channel()
        while True:
            method, _properties, body = channel.basic_get(queue)
            if method is None:
                return reports
            reports.append(dataset_staging.import_batch(store, DatasetImportRequest.decode(body).batch_id))
            channel.basic_ack(method.delivery_tag)
    finally:
        connection.close()
