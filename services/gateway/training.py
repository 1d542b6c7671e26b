"""`/api/v1/training-jobs`: queue a retraining run and follow it."""

from __future__ import annotations

import re
import time
from typing import Any

from flask import Blueprint, Response, jsonify, request

from services.gateway import context
from services.gateway.auth import require_write_token
from shared import audit, training_jobs
from shared.errors import BadInput
from shared.messaging.schemas import TrainRequest
from shared.storage import ObjectStore, layout

blueprint = Blueprint("training", __name__, url_prefix="/api/v1/training-jobs")

# fullmatch and [0-9]: see predictions._JOB_ID.
_JOB_ID = re.compile(r"[0-9]{8}T[0-9]{6}Z-[0-9a-f]{8}")


def _requested_epochs(max_epochs: int) -> int | None:
    body = request.get_json(silent=True) if request.content_length else {}
    if body is None or not isinstance(body, dict):
        raise BadInput('the body must be a JSON object such as {"epochs": 2}, or empty')
    epochs = body.get("epochs")
    if epochs is None:
        return None
    if not isinstance(epochs, int) or isinstance(epochs, bool) or not 1 <= epochs <= max_epochs:
        raise BadInput(f"epochs must be a whole number from 1 to {max_epochs}; got {epochs!r}")
    return epochs


@blueprint.post("")
@require_write_token
def create() -> tuple[Response, int]:
    """Queue a run (202), or answer with the run already waiting (200): one is enough.

    Each run trains on the whole dataset as it is when it starts, so a second request queued
    behind the first would only repeat it; repeated clicks cannot fill the queue either.
    """
    epochs = _requested_epochs(context.settings().max_training_epochs)
    store = context.store()
    waiting = _queued_job(store)
    if waiting is not None:
        return jsonify({**waiting, "url": f"/api/v1/training-jobs/{waiting['id']}", "already_queued": True}), 200
    record = training_jobs.new_record(training_jobs.new_job_id(), epochs)
    # Recorded before anything is queued: a store that refuses it refuses the request (503).
    audit.record(store, "training_requested", context.audit_actor(), job_id=record["id"], epochs=epochs)
    # The record first: once the request is on the queue the trainer may look for it.
    training_jobs.save(store, record)
    try:
        context.broker_client().request_training(
            TrainRequest(job_id=record["id"], requested_at=time.time(), epochs=epochs)
        )
    except Exception:
        store.delete(layout.training_job(record["id"]))
        raise
    return jsonify({**record, "url": f"/api/v1/training-jobs/{record['id']}"}), 202


def _queued_job(store: ObjectStore) -> dict[str, Any] | None:
    """The newest job still "queued", if its request is really on the queue (not lost with a broker)."""
    queued = next((record for record in training_jobs.list_recent(store) if record.get("status") == "queued"), None)
    if queued is None or context.broker_client().training_requests_waiting() == 0:
        return None
    return queued


@blueprint.get("")
def list_jobs() -> Response:
    return jsonify({"jobs": training_jobs.list_recent(context.store())})


@blueprint.get("/<job_id>")
def get(job_id: str) -> Response:
    if not _JOB_ID.fullmatch(job_id):
        raise BadInput(f"{job_id[:80]!r} is not a training job id")
    return jsonify(training_jobs.load(context.store(), job_id))
