"""`POST /api/v1/datasets/uploads`: labelled images into the `incoming` split."""

from __future__ import annotations

import dataclasses

from flask import Blueprint, Response, jsonify, request

from services.gateway import context
from services.gateway.auth import require_write_token
from shared import dataset
from shared.messaging.topology import EVENT_DATASET_CHANGED

blueprint = Blueprint("datasets", __name__, url_prefix="/api/v1/datasets")

UPLOAD_SPLIT = "incoming"


@blueprint.post("/uploads")
@require_write_token
def upload() -> Response:
    """Store each valid, new image; report every file as added, duplicate or rejected."""
    settings = context.settings()
    # The label is checked before any file is read: a wrong label stores nothing.
    label = dataset.check_label(request.form.get("label", ""))
    files = context.uploaded_files(settings.max_dataset_files_per_request, settings.max_upload_bytes)
    store = context.store()
    known = dataset.known_hashes(store)
    outcomes = [
        dataset.add_image(
            store,
            data,
            split=UPLOAD_SPLIT,
            label=label,
            filename=filename[:200],
            known=known,
            max_bytes=settings.max_upload_bytes,
            max_pixels=settings.max_image_pixels,
        )
        for filename, data in files
    ]
    added = sum(outcome.status == "added" for outcome in outcomes)
    if added:
        context.broker().publish_event(EVENT_DATASET_CHANGED, {"split": UPLOAD_SPLIT, "added": added})
    return jsonify(
        {
            "label": label,
            "split": UPLOAD_SPLIT,
            "added": added,
            "duplicates": sum(outcome.status == "duplicate" for outcome in outcomes),
            "rejected": sum(outcome.status == "rejected" for outcome in outcomes),
            "files": [dataclasses.asdict(outcome) for outcome in outcomes],
        }
    )
