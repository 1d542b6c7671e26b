"""`/healthz`, `/readyz` and `/metrics` of the gateway."""

from __future__ import annotations

import os

from flask import Blueprint, Response, current_app, jsonify
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest, multiprocess

from shared.errors import StorageUnavailable
from shared.retention import RetentionPolicy
from shared.serving import registry

blueprint = Blueprint("operations", __name__)


@blueprint.get("/healthz")
def healthz() -> tuple[Response, int]:
    """Alive unless the broker connection thread died (a supervisor should restart us)."""
    if not current_app.extensions["broker_client"].alive:
        return jsonify({"status": "broker connection thread is dead"}), 503
    return jsonify({"status": "ok"}), 200


@blueprint.get("/readyz")
def readyz() -> tuple[Response, int]:
    """Ready when the broker is connected, the store answers and a model is in production."""
    checks = {"broker": "ok" if current_app.extensions["broker_client"].connected.is_set() else "disconnected"}
    try:
        store = current_app.extensions["store"]
        store.ping()
        checks["storage"] = "ok"
        version = registry.production_version(store)
        checks["model"] = version or "none in production"
        model_ok = version is not None
    except StorageUnavailable as error:
        checks["storage"] = str(error)
        model_ok = False
    ready = checks["broker"] == "ok" and checks["storage"] == "ok" and model_ok
    return jsonify({"ready": ready, "checks": checks}), 200 if ready else 503


@blueprint.get("/api/v1/config")
def client_config() -> Response:
    """What a client (the web UI) needs to know before it sends anything."""
    settings = current_app.config["SETTINGS"]
    retention = RetentionPolicy.from_settings(settings)
    return jsonify(
        {
            "write_token_required": bool(settings.write_token),
            # What the UI tells people about their images (0: none kept after the answer).
            "prediction_retention_days": retention.days,
            "prediction_retention": f"Images sent for prediction and their results are {retention.describe()}.",
            "max_upload_bytes": settings.max_upload_bytes,
            "max_files_per_request": settings.max_files_per_request,
            "max_dataset_files_per_request": settings.max_dataset_files_per_request,
            "max_training_epochs": settings.max_training_epochs,
        }
    )


@blueprint.get("/metrics")
def metrics() -> Response:
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        # Several gunicorn processes: sum what each wrote to the shared directory.
        collected = CollectorRegistry()
        multiprocess.MultiProcessCollector(collected)
        return Response(generate_latest(collected), mimetype=CONTENT_TYPE_LATEST)
    return Response(generate_latest(REGISTRY), mimetype=CONTENT_TYPE_LATEST)
