"""The write API: tokens, dataset uploads, training requests, the model registry.

In-process app, real RabbitMQ and S3 endpoint; no trainer runs here (see
test_retraining.py for whole runs).
"""

from __future__ import annotations

import io
from collections.abc import Callable

import pytest
from flask import Flask
from flask.testing import FlaskClient

from shared import dataset, training_jobs
from shared.dataset import iter_images
from shared.messaging import admin
from shared.messaging.topology import Topology
from shared.serving import registry
from shared.settings import Settings
from shared.storage import ObjectStore, create_store
from tests.support.broker import message_count
from tests.support.gateway import in_process_gateway
from tests.support.images import noise_png, solid_jpeg
from tests.support.imports import import_queued

TOKEN = "s3cret-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def settings(s3_settings: Settings) -> Settings:
    return Settings(**{**s3_settings.__dict__, "write_token": TOKEN, "max_training_epochs": 5})


@pytest.fixture
def store(settings: Settings) -> ObjectStore:
    return create_store(settings)


@pytest.fixture
def http(settings: Settings, store: ObjectStore, gateway: Callable[..., Flask]) -> FlaskClient:
    return gateway(settings, store).test_client()


def upload(
    http: FlaskClient, files: list[tuple[bytes, str]], label: str = "benign", headers: dict | None = None, **fields: str
):
    """Post an upload, then import what it queued as the trainer would (the gateway only stages)."""
    form = {"label": label, **fields, "file": [(io.BytesIO(data), name) for data, name in files]}
    response = http.post(
        "/api/v1/datasets/uploads", data=form, content_type="multipart/form-data", headers=headers or AUTH
    )
    settings: Settings = http.application.config["SETTINGS"]
    import_queued(settings, http.application.extensions["store"])
    return response


def queued(settings: Settings, queue: str) -> int:
    return message_count(settings.amqp_url, queue)


def purge(settings: Settings, queue: str) -> None:
    admin.purge_queue(settings.amqp_url, queue)


WRITE_REQUESTS = [
    ("post", "/api/v1/datasets/uploads"),
    ("post", "/api/v1/training-jobs"),
    ("post", "/api/v1/models/test-v1/promote"),
]


@pytest.mark.parametrize(("method", "path"), WRITE_REQUESTS)
@pytest.mark.parametrize("header", [None, "Bearer wrong", "Basic czNjcmV0", f"bearer {TOKEN}x", TOKEN])
def test_write_operations_without_the_right_token_get_401_and_change_nothing(
    method: str, path: str, header: str | None, http: FlaskClient, store: ObjectStore, settings: Settings
) -> None:
    headers = {"Authorization": header} if header else {}
    response = getattr(http, method)(path, headers=headers)
    assert response.status_code == 401
    assert "Bearer" in response.get_json()["error"]["message"]
    assert list(store.list("datasets/")) == [] and list(store.list("uploads/")) == []
    assert list(store.list("training/")) == []
    assert queued(settings, Topology.from_settings(settings).train_queue) == 0
    assert queued(settings, Topology.from_settings(settings).dataset_import_queue) == 0
    assert registry.production_version(store) == "test-v1"


def test_uploads_report_added_duplicate_and_rejected_files(http: FlaskClient, store: ObjectStore) -> None:
    first = upload(http, [(noise_png(1), "a.png"), (noise_png(2), "b.png")])
    assert first.status_code == 200
    assert (first.get_json()["added"], first.get_json()["duplicates"]) == (2, 0)
    second = upload(http, [(noise_png(1), "again.png"), (noise_png(3), "c.png"), (noise_png(3), "c2.png")])
    body = second.get_json()
    assert (body["added"], body["duplicates"], body["rejected"]) == (1, 2, 0)
    assert [entry["status"] for entry in body["files"]] == ["duplicate", "added", "duplicate"]
    assert body["collection"] == "uploads" and body["external"] is False and body["import"] == "queued"
    assert upload(http, [(noise_png(1), "a.png")]).get_json()["import"] == "none", "nothing new, nothing queued"
    images = list(iter_images(store))
    assert len(images) == 3 and {(image.collection, image.label) for image in images} == {("uploads", "benign")}
    assert body["held_out"] == sum(entry["part"] == "test" for entry in body["files"])


def test_a_clinics_upload_goes_to_its_collection_and_holds_a_patients_images_out_together(
    http: FlaskClient, store: ObjectStore
) -> None:
    parts = set()
    for patient in range(12):
        files = [(noise_png(100 + patient * 3 + i), f"p{patient}-{i}.png") for i in range(3)]
        body = upload(http, files, label="malignant", collection="clinic-north", patient=f"P{patient}").get_json()
        assert body["added"] == 3 and body["collection"] == "clinic-north"
        assert len({entry["part"] for entry in body["files"]}) == 1, "a patient's images stay together"
        parts.add(body["files"][0]["part"])
    assert parts == {"train", "test"}
    patients = dataset.read_patients(store, "clinic-north")
    assert len(patients) == 36 and set(patients.values()) == {f"P{i}" for i in range(12)}


def test_a_non_image_in_a_training_upload_is_rejected_and_not_stored(http: FlaskClient, store: ObjectStore) -> None:
    response = upload(http, [(b"%PDF-1.4 not an image", "scan.pdf"), (solid_jpeg(90), "ok.jpg")], label="malignant")
    body = response.get_json()
    assert (body["added"], body["rejected"]) == (1, 1)
    rejected = body["files"][0]
    assert rejected["status"] == "rejected" and "JPEG or PNG" in rejected["reason"]
    assert len(list(iter_images(store))) == 1


def test_an_upload_whose_images_decode_to_more_than_the_request_budget_gets_413_and_stores_nothing(
    settings: Settings, store: ObjectStore
) -> None:
    """Dataset uploads share the predictions' budget: 2 x 200x200 RGB (320 KB decoded) over a 200 KB one."""
    tight = Settings(**{**settings.__dict__, "max_decoded_bytes_per_request": 200_000})
    with in_process_gateway(tight, store) as app:
        http = app.test_client()
        files = [(noise_png(seed, size=(200, 200)), f"{seed}.png") for seed in (1, 2)]
        response = upload(http, files)
        assert response.status_code == 413 and "2 images" in response.get_json()["error"]["message"]
        assert upload(http, files[:1]).status_code == 200  # one alone fits
    assert len(list(iter_images(store))) == 1


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"label": ""}, "label"),
        ({"label": "Benign"}, "label"),
        ({"label": "melanoma"}, "label"),
        ({"label": "../train"}, "label"),
        ({"collection": "Clinic North"}, "collection must be"),
        ({"collection": "../models"}, "collection must be"),
        ({"collection": "a" * 41}, "collection must be"),
        ({"patient": "P1/../../x"}, "patient must be"),
        ({"patient": "p" * 65}, "patient must be"),
    ],
)
def test_a_wrong_label_collection_or_patient_gets_400_and_stores_nothing(
    fields: dict[str, str], message: str, http: FlaskClient, store: ObjectStore
) -> None:
    response = upload(http, [(noise_png(5), "x.png")], **{"label": "benign", **fields})
    assert response.status_code == 400
    assert message in response.get_json()["error"]["message"]
    assert list(store.list("datasets/")) == [] and list(store.list("uploads/")) == []


def test_a_training_request_is_queued_with_a_record(http: FlaskClient, store: ObjectStore, settings: Settings) -> None:
    response = http.post("/api/v1/training-jobs", json={"epochs": 2}, headers=AUTH)
    assert response.status_code == 202
    job = response.get_json()
    assert job["status"] == "queued" and job["epochs"] == 2
    assert http.get(job["url"]).get_json()["status"] == "queued"
    assert queued(settings, Topology.from_settings(settings).train_queue) == 1
    assert [record["id"] for record in http.get("/api/v1/training-jobs").get_json()["jobs"]] == [job["id"]]
    assert training_jobs.load(store, job["id"])["epochs"] == 2


def test_a_training_request_while_one_is_queued_returns_the_queued_job(http: FlaskClient, settings: Settings) -> None:
    train_queue = Topology.from_settings(settings).train_queue
    first = http.post("/api/v1/training-jobs", json={"epochs": 2}, headers=AUTH)
    again = http.post("/api/v1/training-jobs", headers=AUTH)
    assert first.status_code == 202 and again.status_code == 200
    assert again.get_json()["id"] == first.get_json()["id"] and again.get_json()["already_queued"] is True
    assert queued(settings, train_queue) == 1
    assert len(http.get("/api/v1/training-jobs").get_json()["jobs"]) == 1


def test_a_queued_record_whose_request_left_the_queue_does_not_block_a_new_one(
    http: FlaskClient, settings: Settings
) -> None:
    """A record still says "queued" but its message is gone (a broker that lost it): a new job is queued."""
    train_queue = Topology.from_settings(settings).train_queue
    first = http.post("/api/v1/training-jobs", headers=AUTH).get_json()
    purge(settings, train_queue)
    second = http.post("/api/v1/training-jobs", headers=AUTH)
    assert second.status_code == 202 and second.get_json()["id"] != first["id"]
    assert queued(settings, train_queue) == 1


@pytest.mark.parametrize("body", [{"epochs": 0}, {"epochs": 6}, {"epochs": "3"}, {"epochs": True}, [1]])
def test_training_requests_with_bad_epochs_get_400(body: object, http: FlaskClient, settings: Settings) -> None:
    response = http.post("/api/v1/training-jobs", json=body, headers=AUTH)
    assert response.status_code == 400
    assert queued(settings, Topology.from_settings(settings).train_queue) == 0


def test_the_registry_lists_versions_and_promotes(http: FlaskClient, store: ObjectStore) -> None:
    card = registry.read_card(store, "test-v1").document
    registry.publish_version(store, "test-v2", {"model.onnx": store.get("models/versions/test-v1/model.onnx")}, card)
    listing = http.get("/api/v1/models").get_json()
    assert listing["production"] == "test-v1"
    assert [entry["version"] for entry in listing["versions"]] == ["test-v2", "test-v1"]
    promoted = http.post("/api/v1/models/test-v2/promote", headers=AUTH)
    assert promoted.status_code == 200
    assert promoted.get_json()["previous"] == "test-v1"
    assert http.get("/api/v1/models/test-v2").get_json()["is_production"] is True
    assert http.post("/api/v1/models/test-v1/promote", headers=AUTH).get_json()["previous"] == "test-v2"


def test_the_list_gives_each_version_its_external_metrics_or_null_when_not_measured(
    http: FlaskClient, store: ObjectStore
) -> None:
    test_metrics = {"n": 200, "n_malignant": 50, "auc": 0.9, "auc_ci95": [0.86, 0.93], "sensitivity": 0.92}
    test_metrics |= {"specificity": 0.7, "balanced_accuracy": 0.81, "ece": 0.03, "brier": 0.1}
    external_metrics = {**test_metrics, "n": 1011, "n_malignant": 252, "auc": 0.78, "sensitivity": 0.8, "ece": 0.09}
    collection = {"source": "/data/derm7pt", "n": 1011, "n_malignant": 252, "content_hash": "e" * 64, "name": "Derm7pt"}
    card = {
        **registry.read_card(store, "test-v1").document,
        "version": "test-v2",
        "metrics": {"validation": None, "test": test_metrics, "external": external_metrics},
        "data": {"external": collection},
    }
    registry.publish_version(store, "test-v2", {"model.onnx": store.get("models/versions/test-v1/model.onnx")}, card)

    newest, shipped = http.get("/api/v1/models").get_json()["versions"]
    assert newest["external_name"] == "Derm7pt"
    assert newest["external_metrics"] == {
        "n": 1011,
        "auc": 0.78,
        "auc_ci95": [0.86, 0.93],
        "sensitivity": 0.8,
        "specificity": 0.7,
        "balanced_accuracy": 0.81,
        "ece": 0.09,
    }
    assert newest["metrics"]["auc"] == 0.9 and newest["metrics"]["n"] == 200
    # The shipped test card has no external evaluation: null, not an object of nulls.
    assert shipped["version"] == "test-v1"
    assert shipped["external_metrics"] is None and shipped["external_name"] is None
    # The version's own answer is its whole card, external collection included.
    whole = http.get("/api/v1/models/test-v2").get_json()
    assert whole["metrics"]["external"]["n_malignant"] == 252 and whole["data"]["external"] == collection


def test_the_list_gives_each_version_its_collections_or_an_empty_object_for_an_older_card(
    http: FlaskClient, store: ObjectStore
) -> None:
    held_out = {"n": 400, "n_malignant": 80, "auc": 0.9, "auc_ci95": [0.86, 0.93], "sensitivity": 0.92}
    held_out |= {"specificity": 0.7, "balanced_accuracy": 0.81, "ece": 0.03, "brier": 0.1, "roc_curve": {}}
    collections = {
        "ham10000": {**held_out, "threshold": 0.41, "threshold_collection": "ham10000", "external": False},
        "clinic-north": {**held_out, "n": 40, "n_malignant": 9, "threshold": 0.5, "threshold_collection": None},
        "derm7pt": {
            **held_out,
            "n": 1011,
            "auc": 0.78,
            "threshold": 0.5,
            "threshold_collection": None,
            "external": True,
        },
    }
    card = {
        **registry.read_card(store, "test-v1").document,
        "version": "test-v2",
        "collection_thresholds": {"ham10000": 0.41},
        "metrics": {"validation": None, "test": held_out, "external": None, "collections": collections},
    }
    registry.publish_version(store, "test-v2", {"model.onnx": store.get("models/versions/test-v1/model.onnx")}, card)

    newest, shipped = http.get("/api/v1/models").get_json()["versions"]
    assert newest["collection_thresholds"] == {"ham10000": 0.41}
    assert set(newest["collections"]) == {"ham10000", "clinic-north", "derm7pt"}
    assert newest["collections"]["ham10000"] == {
        "n": 400,
        "n_malignant": 80,
        "auc": 0.9,
        "auc_ci95": [0.86, 0.93],
        "sensitivity": 0.92,
        "specificity": 0.7,
        "balanced_accuracy": 0.81,
        "ece": 0.03,
        "threshold": 0.41,
        "threshold_collection": "ham10000",
        "external": False,
    }
    # A collection line without an `external` key is a trained-on one; plot data stays in the card.
    assert newest["collections"]["clinic-north"]["external"] is False
    assert newest["collections"]["clinic-north"]["threshold_collection"] is None
    assert newest["collections"]["derm7pt"]["external"] is True
    assert newest["external_metrics"] is None
    # A card made before collections has neither.
    assert shipped["collections"] == {} and shipped["collection_thresholds"] == {}


@pytest.mark.parametrize("version", ["nope", "..%2F..%2Fetc", "x" * 200])
def test_unknown_versions_get_4xx(version: str, http: FlaskClient) -> None:
    assert http.get(f"/api/v1/models/{version}").status_code in {400, 404}
    assert http.post(f"/api/v1/models/{version}/promote", headers=AUTH).status_code in {400, 404}


def test_the_client_config_says_a_token_is_needed(http: FlaskClient) -> None:
    config = http.get("/api/v1/config").get_json()
    assert config["write_token_required"] is True
    assert config["max_training_epochs"] == 5
