"""A prediction's records in the store and their rules, in one place (as training_jobs.py is
for training jobs): the gateway, the workers and the retention sweep all go through here.

A prediction leaves its upload (`uploads/predictions/{day}/{id}.{ext}`), its result
(`results/predictions/{id}.json`), perhaps a heat map (`results/heatmaps/{id}.png`) and, once
deleted, a tombstone (`results/tombstones/{id}.json`: the id, the reason and when, nothing of
the image). The one rule every writer keeps: deleting writes the tombstone first and then
removes the files, and whoever writes a result or a heat map checks for the tombstone after its
write and takes the write back when it finds one. So a deleted prediction stays deleted,
whatever races the deletion. Everything here expires with the retention policy
(shared/retention.py).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from datetime import datetime

from shared.errors import Gone, NotFound
from shared.images import EXTENSIONS, MODEL_INPUT_EXTENSION
from shared.messaging.schemas import PredictionResult
from shared.storage import ObjectStore, get_json, layout, put_json

log = logging.getLogger(__name__)

# The extensions an upload may be stored under, and the model-size copy of a large one.
UPLOAD_EXTENSIONS = (*sorted(set(EXTENSIONS.values())), MODEL_INPUT_EXTENSION)


def read_result(store: ObjectStore, job_id: str) -> PredictionResult | None:
    """The stored result; None when there is none (pending, deleted or never accepted)."""
    try:
        return PredictionResult(**get_json(store, layout.prediction_result(job_id)))
    except NotFound:
        return None


def has_result(store: ObjectStore, job_id: str) -> bool:
    return store.exists(layout.prediction_result(job_id))


def deletion_reason(store: ObjectStore, job_id: str) -> str | None:
    """Why the prediction was deleted ("deleted on request", "delivered"); None if it was not."""
    try:
        return str(get_json(store, layout.prediction_tombstone(job_id)).get("reason", "deleted"))
    except NotFound:
        return None
    except (ValueError, AttributeError):  # an unreadable tombstone still says the job is gone
        return "deleted"


def is_deleted(store: ObjectStore, job_id: str) -> bool:
    return store.exists(layout.prediction_tombstone(job_id))


def store_result(store: ObjectStore, result: PredictionResult) -> bool:
    """Store a job's result unless the job was deleted; whether it is kept.

    A failure (most often: the image was deleted while the job was queued) is checked before
    and then never written; any result is checked after its write, which catches every
    deletion that raced it.
    """
    if result.error and is_deleted(store, result.job_id):
        return False
    key = layout.prediction_result(result.job_id)
    put_json(store, key, dataclasses.asdict(result))
    if is_deleted(store, result.job_id):
        store.delete(key)
        log.info("job %s was deleted while it ran; its result is not kept", result.job_id)
        return False
    return True


def record_failure(store: ObjectStore, failure: PredictionResult) -> bool:
    """Store a failure for a job that has no result yet and was not deleted; whether it was stored.

    A job answered before it died (its ack lost) keeps its answer.
    """
    if has_result(store, failure.job_id) or is_deleted(store, failure.job_id):
        return False
    put_json(store, layout.prediction_result(failure.job_id), dataclasses.asdict(failure))
    return True


def remove_result(store: ObjectStore, job_id: str) -> None:
    """Take a result back (a dead-lettered job replayed reads `pending` again)."""
    store.delete(layout.prediction_result(job_id))


def has_heatmap(store: ObjectStore, job_id: str) -> bool:
    return store.exists(layout.prediction_heatmap(job_id))


def read_heatmap(store: ObjectStore, job_id: str) -> bytes:
    """The stored heat map PNG; raises NotFound when it is not drawn (or not kept)."""
    return store.get(layout.prediction_heatmap(job_id))


def store_heatmap(store: ObjectStore, job_id: str, png: bytes) -> None:
    """Store a heat map (a picture of the patient's skin) unless the prediction was deleted,
    before or during the drawing; raises Gone then, with nothing kept."""
    if is_deleted(store, job_id):
        raise Gone(f"prediction {job_id} was deleted")
    key = layout.prediction_heatmap(job_id)
    store.put(key, png, "image/png")
    if is_deleted(store, job_id):
        store.delete(key)
        raise Gone(f"prediction {job_id} was deleted while its heat map was drawn")


def remove_heatmap(store: ObjectStore, job_id: str) -> None:
    """Delete a delivered heat map (PREDICTION_RETENTION_DAYS=0), leaving the rest."""
    store.delete(layout.prediction_heatmap(job_id))


def upload_key(store: ObjectStore, job_id: str, day: datetime) -> str | None:
    """Where the job's uploaded image (as sent) is stored; None when it is not (any more)."""
    for extension in sorted(set(EXTENSIONS.values())):
        key = layout.prediction_upload(job_id, extension, day)
        if store.exists(key):
            return key
    return None


def forget(store: ObjectStore, job_id: str, day: datetime, reason: str) -> None:
    """Delete everything the prediction left (upload, its model copy, result, heat map),
    leaving a tombstone that says why. The tombstone is written first (the module's rule)."""
    put_json(store, layout.prediction_tombstone(job_id), {"id": job_id, "reason": reason, "deleted_at": time.time()})
    for extension in UPLOAD_EXTENSIONS:
        store.delete(layout.prediction_upload(job_id, extension, day))
    store.delete(layout.prediction_result(job_id))
    store.delete(layout.prediction_heatmap(job_id))
