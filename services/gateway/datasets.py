"""`POST /api/v1/datasets/uploads`: labelled images into a collection (a clinic's own images).

Each new image goes to the collection's training part or to its held-out part, by patient
(the `patient` field) or by image hash (shared/dataset.py `assign_part`): the response says
which, and the assignment never changes.
"""

from __future__ import annotations

import dataclasses

from flask import Blueprint, Response, jsonify, request

from services.gateway import context
from services.gateway.auth import require_write_token
from shared import audit, dataset
from shared.images import MODEL_INPUT_SIZE
from shared.messaging.topology import EVENT_DATASET_CHANGED

blueprint = Blueprint("datasets", __name__, url_prefix="/api/v1/datasets")


@blueprint.post("/uploads")
@require_write_token
def upload() -> Response:
    """Store each valid, new image; report every file as added, duplicate or rejected."""
    settings = context.settings()
    # Every field is checked before any file is read: a wrong one stores nothing.
    label = dataset.check_label(request.form.get("label", ""))
    name = dataset.check_collection_name(request.form.get("collection") or dataset.DEFAULT_UPLOAD_COLLECTION)
    patient = request.form.get("patient") or None
    if patient is not None:
        dataset.check_patient(patient)
    files = context.uploaded_files(settings.max_dataset_files_per_request)
    store = context.store()
    # Recorded before any image is stored (the fields are checked by now): a store that
    # refuses the entry refuses the upload (503). What was added is in the answer and the logs.
    audit.record(store, "dataset_upload", context.audit_actor(), collection=name, label=label, files=len(files))
    with context.upload_slot():
        # Invalid files are reported one by one below; the request's pixels are bounded first.
        context.check_request_pixels(files, reduce_to=MODEL_INPUT_SIZE, skip_bad=True)
        collection = dataset.open_collection(store, name, holdout_fraction=settings.holdout_fraction)
        outcomes = dataset.add_images(
            store,
            collection,
            # Read one at a time, as add_images reaches each file.
            (dataset.LabelledFile(file.filename[:200], label, file.read(), patient) for file in files),
            known=dataset.known_hashes(store),
            max_bytes=settings.max_upload_bytes,
            max_pixels=settings.max_image_pixels,
            budget=context.decode_budget(),
            budget_wait_s=settings.predict_timeout_s,
        )
    added = [outcome for outcome in outcomes if outcome.status == "added"]
    if added:
        context.broker().publish_event(EVENT_DATASET_CHANGED, {"collection": name, "added": len(added)})
    return jsonify(
        {
            "label": label,
            "collection": name,
            "external": collection.external,
            "added": len(added),
            "held_out": sum(outcome.part == dataset.TEST_PART for outcome in added),
            "duplicates": sum(outcome.status == "duplicate" for outcome in outcomes),
            "rejected": sum(outcome.status == "rejected" for outcome in outcomes),
            "files": [dataclasses.asdict(outcome) for outcome in outcomes],
        }
    )
