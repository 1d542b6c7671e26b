"""`/api/v1/training-jobs`: queue a retraining run and follow it."""

from __future__ import annotations

import re
import time

from flask import Blueprint, Response, jsonify, request

from services.gateway import context
from services.gateway.auth import require_write_token
from shared import training_jobs
from shared.errors import BadInput
from shared.messaging.schemas import TrainRequest
from shared.storage import layout

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
    epochs = _requested_epochs(context.settings().max_training_epochs)
    record = training_jobs.new_record(training_jobs.new_job_id(), epochs)
    store = context.store()
    # The record first: once the request is on the queue the trainer may look for it.
    training_jobs.save(store, record)
    try:
        context.broker().request_training(TrainRequest(job_id=record["id"], requested_at=time.time(), epochs=epochs))
    except Exception:
        store.delete(layout.training_job(record["id"]))
        raise
    return jsonify({**record, "url": f"/api/v1/training-jobs/{record['id']}"}), 202


@blueprint.get("")
def list_jobs() -> Response:
    return jsonify({"jobs": training_jobs.list_recent(context.store())})


@blueprint.get("/<job_id>")
def get(job_id: str) -> Response:
    if not _JOB_ID.fullmatch(job_id):
        raise BadInput(f"{job_id[:80]!r} is not a training job id")
    return jsonify(training_jobs.load(context.store(), job_id))
