"""`GET /api/v1/insights` on a tiny Flask app holding only the insights blueprint."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import jsonschema
import numpy as np
import pytest
from flask import Flask
from flask.testing import FlaskClient

from services.gateway import insights_api
from services.gateway.json_provider import FiniteJSONProvider, finite_json
from services.gateway.openapi import DOCUMENT_PATH
from services.insights.drift import MIN_WINDOW
from services.insights.drift_consumer import DriftMonitor
from shared.messaging.schemas import Event
from shared.messaging.topology import EVENT_PREDICTIONS_SCORED
from shared.serving import registry
from shared.storage import FilesystemStore, ObjectStore, layout, put_json

TEST_METRICS: dict[str, Any] = {
    "n": 4,
    "auc": 0.75,
    "auc_ci95": [0.5, 1.0],
    "sensitivity": 0.5,
    "specificity": 1.0,
    "balanced_accuracy": 0.75,
    "precision": 1.0,
    "f1": 0.667,
    "confusion_matrix": {"tp": 1, "fn": 1, "tn": 2, "fp": 0},
    "brier": 0.2,
    "ece": 0.1,
    "reliability": [{"mean_score": 0.3, "observed": 0.25, "count": 4}],
    "roc_curve": {"fpr": [0.0, 0.0, 1.0], "tpr": [0.0, 0.5, 1.0], "thresholds": [math.inf, 0.8, 0.1]},
}


@pytest.fixture
def store(tmp_path: Path) -> ObjectStore:
    return FilesystemStore(tmp_path / "store")


@pytest.fixture
def client(store: ObjectStore) -> FlaskClient:
    app = Flask(__name__)
    app.json = FiniteJSONProvider(app)
    app.extensions["store"] = store
    app.register_blueprint(insights_api.blueprint)
    return app.test_client()


def publish_model(store: ObjectStore, card: dict[str, Any]) -> None:
    registry.publish_version(store, "v1", {"model.onnx": b"onnx"}, card)
    registry.promote(store, "v1", reason="test")


def test_an_empty_store_gives_null_snapshot_and_null_model(client: FlaskClient) -> None:
    response = client.get("/api/v1/insights")
    assert response.status_code == 200
    assert response.get_json() == {"snapshot": None, "model": None}


def test_the_snapshot_is_returned_as_written(client: FlaskClient, store: ObjectStore) -> None:
    counts = {"train": {"benign": 3, "malignant": 0}, "test": {"benign": 0, "malignant": 1}}
    snapshot = {
        "computed_at": 12.5,
        "image_count": 4,
        "counts": counts,
        "collections": {"ham10000": {"external": False, "counts": counts}},
    }
    put_json(store, layout.INSIGHTS_SNAPSHOT, snapshot)
    assert client.get("/api/v1/insights").get_json()["snapshot"] == snapshot


def test_the_model_part_is_production_version_threshold_and_test_metrics_with_infinity_as_null(
    client: FlaskClient, store: ObjectStore
) -> None:
    publish_model(store, {"threshold": 0.4, "metrics": {"validation": {"auc": 0.9}, "test": TEST_METRICS}})
    response = client.get("/api/v1/insights")
    # Strict JSON, as a browser's JSON.parse wants it: no Infinity or NaN tokens.
    body = json.loads(response.get_data(as_text=True), parse_constant=lambda token: pytest.fail(token))
    model = body["model"]
    assert model["version"] == "v1" and model["threshold"] == 0.4
    assert model["test"]["roc_curve"]["thresholds"] == [None, 0.8, 0.1]
    assert model["test"]["confusion_matrix"] == {"tp": 1, "fn": 1, "tn": 2, "fp": 0}
    assert model["test"]["auc_ci95"] == [0.5, 1.0]


def test_a_production_card_without_test_metrics_gives_a_null_test_part(client: FlaskClient, store: ObjectStore) -> None:
    publish_model(store, {"threshold": 0.5, "calibration": None})
    assert client.get("/api/v1/insights").get_json()["model"] == {
        "version": "v1",
        "threshold": 0.5,
        "test": None,
        "external": None,
        "external_name": None,
    }


def test_the_model_part_carries_the_external_collections_metrics_and_name(
    client: FlaskClient, store: ObjectStore
) -> None:
    external = {**TEST_METRICS, "n": 1011, "auc": 0.7}
    collection = {"source": "/data/derm7pt", "n": 1011, "n_malignant": 252, "content_hash": "e" * 64, "name": "Derm7pt"}
    publish_model(
        store,
        {"threshold": 0.4, "metrics": {"test": TEST_METRICS, "external": external}, "data": {"external": collection}},
    )
    model = client.get("/api/v1/insights").get_json()["model"]
    assert model["external_name"] == "Derm7pt"
    assert model["external"]["n"] == 1011 and model["external"]["auc"] == 0.7
    assert model["external"]["roc_curve"]["thresholds"] == [None, 0.8, 0.1]
    assert model["test"]["n"] == 4


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (math.inf, None),
        (-math.inf, None),
        (math.nan, None),
        ({"a": [1.5, math.inf, {"b": math.nan}]}, {"a": [1.5, None, {"b": None}]}),
        ((1, "x", True, None), [1, "x", True, None]),
    ],
)
def test_finite_json_replaces_every_non_finite_number_with_null(value: object, expected: object) -> None:
    assert finite_json(value) == expected


def test_drift_is_null_before_the_insights_service_writes_a_record(client: FlaskClient) -> None:
    response = client.get("/api/v1/insights/drift")
    assert response.status_code == 200
    assert response.get_json() == {"drift": None}


def test_drift_serves_the_monitors_record_as_the_openapi_document_describes(
    client: FlaskClient, store: ObjectStore
) -> None:
    rng = np.random.default_rng(0)
    monitor = DriftMonitor(lambda _version: rng.normal(size=(50, 16)))
    predictions = [
        {"probability": 0.3, "score": 0.4, "unlike_training": index == 0, "not_dermoscopy": False, "projection": row}
        for index, row in enumerate(rng.normal(size=(MIN_WINDOW, 16)).tolist())
    ]
    data = {"model_version": "v1", "predictions": predictions}
    monitor.ingest(Event(name=EVENT_PREDICTIONS_SCORED, event_id="e1", occurred_at=0.0, data=data).encode())
    put_json(store, layout.INSIGHTS_DRIFT, monitor.record())

    served = client.get("/api/v1/insights/drift").get_json()
    version = served["drift"]["versions"]["v1"]
    assert version["window"]["predictions"] == MIN_WINDOW and version["window"]["drift"] >= 0
    assert version["last_day"]["flagged_share"] == {"unlike_training": 0.01, "not_dermoscopy": 0.0}
    document = json.loads(DOCUMENT_PATH.read_text())
    jsonschema.validate(served, document["components"]["schemas"]["InputDrift"])
