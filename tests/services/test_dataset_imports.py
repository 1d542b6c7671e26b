"""Dataset uploads without the gateway writing `datasets/` (issue 24): the gateway stages a batch
and queues it on `dataset-import`; the trainer's import loop puts it into the dataset.

In-process gateway and import loop, the real RabbitMQ and the suite's S3 endpoint.
"""

from __future__ import annotations

import io
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from services.gateway.broker_client import BrokerClient
from services.trainer.imports import DatasetImporter
from shared import audit, dataset
from shared.errors import BrokerUnavailable, StorageUnavailable
from shared.messaging import admin
from shared.messaging.rabbitmq import open_channel
from shared.messaging.schemas import DatasetImportRequest, Event
from shared.messaging.topology import EVENT_DATASET_CHANGED, Topology
from shared.settings import Settings
from shared.storage import ObjectStore, create_store, layout
from tests.support.broker import CONNECT_TIMEOUT_S, message_count
from tests.support.gateway import in_process_gateway
from tests.support.images import noise_png
from tests.support.imports import import_queued
from tests.support.network import waiting
from tests.support.stores import RefusingWrites

TOKEN = "import-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
WAIT_S = 20


@pytest.fixture
def settings(s3_settings: Settings) -> Settings:
    return Settings(**{**s3_settings.__dict__, "write_token": TOKEN})


@pytest.fixture
def store(settings: Settings) -> ObjectStore:
    return create_store(settings)


@pytest.fixture
def http(settings: Settings, store: ObjectStore, gateway: Callable[..., Flask]) -> FlaskClient:
    return gateway(settings, RefusingWrites(store, layout.DATASETS_PREFIX)).test_client()


def upload(http: FlaskClient, seeds: list[int], **fields: str):
    form = {"label": "malignant", **fields, "file": [(io.BytesIO(noise_png(seed)), f"{seed}.png") for seed in seeds]}
    return http.post("/api/v1/datasets/uploads", data=form, content_type="multipart/form-data", headers=AUTH)


wait_for = waiting(WAIT_S, interval_s=0.1)


def test_a_gateway_that_cannot_write_the_dataset_accepts_uploads_and_the_import_stores_them(
    http: FlaskClient, store: ObjectStore, settings: Settings
) -> None:
    response = upload(http, [1, 2, 3], collection="clinic-a", patient="P7")
    assert response.status_code == 200, response.get_data(as_text=True)
    body = response.get_json()
    assert (body["added"], body["import"]) == (3, "queued")
    assert list(store.list(layout.DATASETS_PREFIX)) == [], "the gateway wrote nothing into datasets/"
    assert [entry["action"] for entry in audit.read(store)] == ["dataset_upload"]
    [report] = import_queued(settings, store)
    assert report is not None and report.added == 3
    parts = {image.sha256: image.part for image in dataset.iter_images(store, "clinic-a")}
    assert parts == {entry["sha256"]: entry["part"] for entry in body["files"]}, "each in the part the answer named"
    assert set(dataset.read_patients(store, "clinic-a").values()) == {"P7"}
    # Now in the dataset: the same images again are duplicates, and nothing is queued.
    again = upload(http, [1, 2]).get_json()
    assert (again["added"], again["duplicates"], again["import"]) == (0, 2, "none")
    assert import_queued(settings, store) == []


def test_a_batch_delivered_twice_is_imported_once(http: FlaskClient, store: ObjectStore, settings: Settings) -> None:
    assert upload(http, [4, 5]).status_code == 200
    queue = Topology.from_settings(settings).dataset_import_queue
    # Confirms: the copy is queued before the imports below look.
    with open_channel(settings.amqp_url, confirms=True) as channel:
        job = channel.get(queue)
        assert job is not None and DatasetImportRequest.decode(job.body).batch_id == job.message_id
        channel.republish(queue, job, headers=job.headers)  # the same job once more
        channel.requeue(job.tag)  # and the original back
    first, second = import_queued(settings, store)
    assert first is not None and first.added == 2 and second is None
    assert len(list(dataset.iter_images(store))) == 2
    assert list(store.list(layout.DATASET_STAGING_PREFIX)) == []


def test_a_publish_that_fails_answers_503_and_leaves_nothing_staged(
    settings: Settings, store: ObjectStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(_self: BrokerClient, _request: DatasetImportRequest) -> None:
        raise BrokerUnavailable("the broker did not confirm in time")

    monkeypatch.setattr(BrokerClient, "request_dataset_import", refuse)
    with in_process_gateway(settings, store) as app:
        response = upload(app.test_client(), [6, 7])
    assert response.status_code == 503 and response.get_json()["error"]["code"] == "broker_unavailable"
    assert list(store.list("uploads/")) == [] and list(store.list(layout.DATASETS_PREFIX)) == []
    assert message_count(settings.amqp_url, Topology.from_settings(settings).dataset_import_queue) == 0


@pytest.fixture
def importer(settings: Settings, store: ObjectStore) -> Iterator[DatasetImporter]:
    stopping = threading.Event()
    running = DatasetImporter(settings, store, stopping)
    thread = threading.Thread(target=running.run, name="dataset-import", daemon=True)
    thread.start()
    try:
        assert running.connected.wait(CONNECT_TIMEOUT_S)
        yield running
    finally:
        stopping.set()
        thread.join(timeout=10)


def test_through_the_broker_an_upload_reaches_the_dataset_and_insights_hears_of_it(
    http: FlaskClient, store: ObjectStore, settings: Settings, importer: DatasetImporter
) -> None:
    topology = Topology.from_settings(settings)
    body = upload(http, [8, 9], collection="clinic-b").get_json()
    assert (body["added"], body["import"]) == (2, "queued")
    wait_for(lambda: len(list(dataset.iter_images(store, "clinic-b"))) == 2, "the images in the dataset")
    wait_for(lambda: list(store.list(layout.DATASET_STAGING_PREFIX)) == [], "the staged batch deleted")
    wait_for(lambda: message_count(settings.amqp_url, topology.dataset_import_queue) == 0, "the job acked")
    announced = admin.get_one(settings.amqp_url, topology.insights_queue)
    assert announced is not None, "no dataset.changed event for insights"
    event = Event.decode(announced.body)
    assert event.name == EVENT_DATASET_CHANGED and event.data["collection"] == "clinic-b"
    # A job that names no batch is dead-lettered, and the loop goes on with the next one.
    bad_job = b'{"batch_id": "../../models", "staged_at": 0}'
    admin.publish_raw(settings.amqp_url, "", topology.dataset_import_queue, bad_job)
    dead = topology.dead_letter_queue(topology.dataset_import_queue)
    wait_for(lambda: message_count(settings.amqp_url, dead) == 1, "the bad job dead-lettered")
    assert upload(http, [10]).get_json()["added"] == 1
    wait_for(lambda: len(list(dataset.iter_images(store))) == 3, "the next upload imported")


class StoreAwayAtFirst:
    """The real store, except that its first `failures` reads fail as if it were down."""

    def __init__(self, store: ObjectStore, failures: int) -> None:
        self._store, self.failures = store, failures

    def get(self, key: str) -> bytes:
        if self.failures > 0:
            self.failures -= 1
            raise StorageUnavailable(f"cannot get {key}: connection refused")
        return self._store.get(key)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)


def test_while_the_store_is_away_the_job_is_held_and_imported_once_it_is_back(
    http: FlaskClient, store: ObjectStore, settings: Settings
) -> None:
    topology = Topology.from_settings(settings)
    assert upload(http, [11, 12]).get_json()["import"] == "queued"
    flaky = StoreAwayAtFirst(store, failures=3)
    stopping = threading.Event()
    importer = DatasetImporter(settings, flaky, stopping)  # type: ignore[arg-type]
    thread = threading.Thread(target=importer.run, daemon=True)
    thread.start()
    try:
        wait_for(lambda: len(list(dataset.iter_images(store))) == 2, "the images imported after the outage")
        wait_for(lambda: message_count(settings.amqp_url, topology.dataset_import_queue) == 0, "the job acked")
    finally:
        stopping.set()
        thread.join(timeout=10)
    assert flaky.failures == 0
    # Held in hand, not given back: no delivery was spent, nothing dead-lettered.
    assert message_count(settings.amqp_url, topology.dead_letter_queue(topology.dataset_import_queue)) == 0
