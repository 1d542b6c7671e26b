"""`POST /api/v1/datasets/uploads`: labelled images into a collection (a clinic's own images).

Each new image goes to the collection's training part or to its held-out part, by patient
(the `patient` field) or by image hash (shared/dataset.py `assign_part`): the response says
which, and the assignment never changes.

The gateway does not write the dataset (issue 24: its store credentials cannot write
`datasets/`). It checks every file as before, stages the new images and a manifest under
`uploads/datasets/{batch_id}/` and queues the batch on `dataset-import`; the trainer imports it
(shared/dataset_staging.py). The answer is the same as an import's would be, with
`"import": "queued"`. A batch that cannot be queued is deleted again (503).
"""

from __future__ import annotations

import dataclasses
import logging
import time

from flask import Blueprint, Response, jsonify, request

from services.gateway import context
from services.gateway.auth import require_write_token
from shared import audit, dataset, dataset_staging
from shared.errors import SkinLesionError
from shared.images import MODEL_INPUT_SIZE
from shared.messaging.schemas import DatasetImportRequest

log = logging.getLogger(__name__)

blueprint = Blueprint("datasets", __name__, url_prefix="/api/v1/datasets")


@blueprint.post("/uploads")
@require_write_token
def upload() -> Response:
    """Stage each valid, new image for import; report every file as added, duplicate or rejected."""
    settings = context.settings()
    # Every field is checked before any file is read: a wrong one stores nothing.
    label = dataset.check_label(request.form.get("label", ""))
    name = dataset.check_collection_name(request.form.get("collection") or dataset.DEFAULT_UPLOAD_COLLECTION)
    patient = request.form.get("patient") or None
    if patient is not None:
        dataset.check_patient(patient)
    files = context.uploaded_files(settings.max_dataset_files_per_request)
    store = context.store()
    # Recorded before any image is staged (the fields are checked by now): a store that
    # refuses the entry refuses the upload (503). What was added is in the answer and the logs.
    audit.record(store, "dataset_upload", context.audit_actor(), collection=name, label=label, files=len(files))
    batch_id = dataset_staging.new_batch_id()
    with context.upload_slot():
        # Invalid files are reported one by one below; the request's pixels are bounded first.
        context.check_request_pixels(files, reduce_to=MODEL_INPUT_SIZE, skip_bad=True)
        # Read, never created here: the import creates a new collection with this share.
        collection, new = dataset_staging.collection_for_upload(store, name, settings.holdout_fraction)
        outcomes = dataset_staging.stage_upload(
            store,
            batch_id,
            collection,
            new_collection=new,
            label=label,
            patient=patient,
            # Read one at a time, as each file is reached.
            files=((file.filename[:200], file.read()) for file in files),
            known=dataset.known_hashes(store),
            max_bytes=settings.max_upload_bytes,
            max_pixels=settings.max_image_pixels,
            budget=context.decode_budget(),
            budget_wait_s=settings.predict_timeout_s,
        )
    added = [outcome for outcome in outcomes if outcome.status == "added"]
    if added:
        try:
            context.broker_client().request_dataset_import(
                DatasetImportRequest(batch_id=batch_id, staged_at=time.time())
            )
        except SkinLesionError:
            # Nothing is left claimed as added: the client is told to retry (503).
            dataset_staging.discard_quietly(store, batch_id)
            raise
        log.info("staged dataset batch %s: %d images for collection %s", batch_id, len(added), name)
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
            # Added images reach the dataset once the trainer has imported the batch.
            "import": "queued" if added else "none",
        }
    )
