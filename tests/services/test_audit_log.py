"""The audit log (issue 24, item 3): every promotion, rollback, training request, dataset
upload and prediction deletion is an entry of its own in the store, written before the action,
readable with the write token through `GET /api/v1/audit`.

In-process gateway, real RabbitMQ and the suite's S3 endpoint; the trainer's automatic
promotion through `finish_published` (the path a run resumed after publishing takes).
"""

from __future__ import annotations

import io
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from services.gateway.predictions import new_job_id
from services.trainer.pipeline import finish_published
from shared import audit
from shared.errors import StorageUnavailable
from shared.serving import registry
from shared.settings import Settings
from shared.storage import ObjectStore, create_store, layout, put_json
from tests.support.gateway import in_process_gateway
from tests.support.images import noise_png
from tests.support.stores import RefusingWrites

TOKEN = "audit-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
GATE = {"passed": True, "reasons": ["auc within tolerance"], "production_version": "test-v1"}


@pytest.fixture
def settings(s3_settings: Settings) -> Settings:
    return Settings(**{**s3_settings.__dict__, "write_token": TOKEN})


@pytest.fixture
def store(settings: Settings) -> ObjectStore:
    return create_store(settings)


@pytest.fixture
def http(settings: Settings, store: ObjectStore, gateway: Callable[..., Flask]) -> FlaskClient:
    return gateway(settings, store).test_client()


def publish_copy(store: ObjectStore, version: str, gate: dict[str, Any] | None = None) -> None:
    card = {**registry.read_card(store, "test-v1").document, "version": version, "gate": gate}
    card.pop("artifacts", None)
    files = {"model.onnx": store.get(layout.model_file("test-v1", "model.onnx"))}
    registry.publish_version(store, version, files, card)


def entries(http: FlaskClient, **query: object) -> dict[str, Any]:
    response = http.get("/api/v1/audit", query_string=query, headers=AUTH)
    assert response.status_code == 200, response.get_data(as_text=True)
    return response.get_json()


def test_each_recorded_action_appears_with_its_fields(http: FlaskClient, store: ObjectStore) -> None:
    publish_copy(store, "test-v2", GATE)
    assert http.post("/api/v1/models/test-v2/promote", json={"reason": "better AUC"}, headers=AUTH).status_code == 200
    assert http.post("/api/v1/models/test-v2/promote", headers=AUTH).status_code == 200  # a retry: nothing new
    assert http.post("/api/v1/models/test-v1/promote", json={"reason": "alarm"}, headers=AUTH).status_code == 200
    created = http.post("/api/v1/training-jobs", json={"epochs": 1}, headers=AUTH)
    assert created.status_code == 202
    form = {"label": "malignant", "collection": "clinic-a", "file": [(io.BytesIO(noise_png()), "a.png")]}
    uploaded = http.post("/api/v1/datasets/uploads", data=form, content_type="multipart/form-data", headers=AUTH)
    assert uploaded.status_code == 200
    job_id = new_job_id(datetime.now(UTC))
    put_json(store, layout.prediction_result(job_id), {"job_id": job_id})
    assert http.delete(f"/api/v1/predictions/{job_id}", headers=AUTH).status_code == 204

    found = entries(http)
    assert found["next_before"] is None
    newest_first = found["entries"]
    assert [entry["action"] for entry in newest_first] == [
        "prediction_deleted",
        "dataset_upload",
        "training_requested",
        "rollback",
        "promote",
    ]
    deleted, upload, training, rollback, promote = newest_first
    actor = {"credential": "write-token", "address": "127.0.0.1", "origin": None}
    assert all(entry["actor"] == actor for entry in newest_first)
    assert [entry["at"] for entry in newest_first] == sorted((entry["at"] for entry in newest_first), reverse=True)
    assert abs(promote["at"] - time.time()) < 60
    assert (promote["version"], promote["from"], promote["to"], promote["reason"]) == (
        "test-v2",
        "test-v1",
        "test-v2",
        "better AUC",
    )
    assert promote["gate_digest"] == audit.gate_digest(GATE) and len(promote["gate_digest"]) == 64
    assert (rollback["from"], rollback["to"], rollback["reason"]) == ("test-v2", "test-v1", "alarm")
    assert rollback["gate_digest"] == audit.gate_digest(registry.read_card(store, "test-v1").gate)
    assert (training["job_id"], training["epochs"]) == (created.get_json()["id"], 1)
    assert (upload["collection"], upload["label"], upload["files"]) == ("clinic-a", "malignant", 1)
    assert deleted["job_id"] == job_id
    # Each entry is an object of its own, under a key its id names.
    assert sorted(store.list(layout.AUDIT_PREFIX)) == sorted(audit.entry_key(entry["id"]) for entry in newest_first)


def test_the_trainers_promotion_is_recorded_before_it_happens(http: FlaskClient, store: ObjectStore) -> None:
    """(`http`: the gateway seeds test-v1 into the store.)"""
    publish_copy(store, "test-v2", GATE)
    registry.promote(store, "test-v1", reason="start")
    events: list[tuple[str, dict[str, Any]]] = []
    card = registry.read_card(store, "test-v2")

    # The store refuses the entry: the job fails and production has not moved.
    refusing = RefusingWrites(store, layout.AUDIT_PREFIX)
    with pytest.raises(StorageUnavailable):
        finish_published(refusing, card, "job-1", lambda *event: events.append(event))  # type: ignore[arg-type]
    assert registry.production_version(store) == "test-v1" and events == []

    finish_published(store, card, "job-1", lambda *event: events.append(event))
    assert registry.production_version(store) == "test-v2"
    [entry] = audit.read(store)
    assert entry["action"] == "automatic_promotion"
    assert entry["actor"] == {"credential": "trainer", "address": None, "origin": None}
    assert (entry["version"], entry["from"], entry["to"], entry["job_id"]) == ("test-v2", "test-v1", "test-v2", "job-1")
    assert entry["gate_digest"] == audit.gate_digest(GATE)
    assert entry["reason"] == "training job job-1 passed the gate"


def test_a_store_that_refuses_the_entry_refuses_the_action(settings: Settings, store: ObjectStore) -> None:
    with in_process_gateway(settings, RefusingWrites(store, layout.AUDIT_PREFIX)) as app:  # type: ignore[arg-type]
        http = app.test_client()
        publish_copy(store, "test-v2", GATE)
        refused = http.post("/api/v1/models/test-v2/promote", headers=AUTH)
        assert refused.status_code == 503 and refused.get_json()["error"]["code"] == "storage_unavailable"
        assert registry.production_version(store) == "test-v1"
        assert http.post("/api/v1/training-jobs", headers=AUTH).status_code == 503
        assert list(store.list("training/jobs/")) == []
        form = {"label": "benign", "file": [(io.BytesIO(noise_png()), "a.png")]}
        upload = http.post("/api/v1/datasets/uploads", data=form, content_type="multipart/form-data", headers=AUTH)
        assert upload.status_code == 503
        assert list(store.list(layout.DATASETS_PREFIX)) == [] and list(store.list("uploads/")) == []
    assert list(store.list(layout.AUDIT_PREFIX)) == []


def test_entries_are_never_overwritten(store: ObjectStore) -> None:
    actor = {"credential": "write-token", "address": "10.0.0.1", "origin": None}
    now = time.time()
    written = [audit.record(store, "training_requested", actor, now=now, job_id=f"job-{i}") for i in range(5)]
    first = store.get(audit.entry_key(written[0]["id"]))
    audit.record(store, "training_requested", actor, now=now, job_id="later")
    # Same millisecond, six entries, six keys; the first is byte for byte what it was.
    assert len(set(store.list(layout.AUDIT_PREFIX))) == 6
    assert store.get(audit.entry_key(written[0]["id"])) == first
    assert {entry["job_id"] for entry in audit.read(store)} == {f"job-{i}" for i in range(5)} | {"later"}


@pytest.mark.parametrize("header", [None, "Bearer wrong", TOKEN])
def test_reading_needs_the_token(header: str | None, http: FlaskClient, store: ObjectStore) -> None:
    audit.record(store, "training_requested", {"credential": "anonymous", "address": None, "origin": None})
    response = http.get("/api/v1/audit", headers={"Authorization": header} if header else {})
    assert response.status_code == 401
    assert "entries" not in response.get_json()


def test_the_log_pages_newest_first(http: FlaskClient, store: ObjectStore) -> None:
    actor = {"credential": "write-token", "address": None, "origin": None}
    start = time.time() - 100
    for i in range(7):
        audit.record(store, "training_requested", actor, now=start + i, job_id=f"job-{i}")
    pages = []
    query: dict[str, object] = {"limit": 3}
    while True:
        page = entries(http, **query)
        pages.append([entry["job_id"] for entry in page["entries"]])
        if page["next_before"] is None:
            break
        query = {"limit": 3, "before": page["next_before"]}
    assert pages == [["job-6", "job-5", "job-4"], ["job-3", "job-2", "job-1"], ["job-0"]]
    assert entries(http, limit=7)["next_before"] is None
    for bad in ({"limit": 0}, {"limit": 201}, {"limit": "x"}, {"before": "models/audit/x"}):
        assert http.get("/api/v1/audit", query_string=bad, headers=AUTH).status_code == 400


def test_rollback_is_a_promotion_to_an_older_version() -> None:
    assert audit.is_rollback("20261127T173808Z-ad4a0b", "20261203T091500Z-3f9c21")
    assert not audit.is_rollback("20261203T091500Z-3f9c21", "20261127T173808Z-ad4a0b")
    assert not audit.is_rollback("test-v1", None)


def test_the_gate_digest_does_not_depend_on_key_order() -> None:
    assert audit.gate_digest({"a": 1, "b": [0.5]}) == audit.gate_digest({"b": [0.5], "a": 1})
    assert audit.gate_digest({"a": 1}) != audit.gate_digest({"a": 2})
    assert audit.gate_digest(None) is None and audit.gate_digest({}) is None
