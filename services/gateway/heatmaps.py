"""`GET /api/v1/predictions/{id}/heatmap`: where the model found evidence of malignancy, as a PNG.

Served from the store when a worker has drawn it already; otherwise a worker is asked over the
broker (the `heatmap` queue, direct reply-to) and the gateway waits at most PREDICT_TIMEOUT_S.
The gateway never draws one: decoding and drawing images is the workers' work, and they scale.
"""

from __future__ import annotations

import logging
import time

from flask import Blueprint, Response

from services.gateway import context
from services.gateway.broker_client import PendingHeatmap
from services.gateway.predictions import stored_result, upload_key
from shared import prediction_records
from shared.errors import (
    Gone,
    HeatmapUnavailable,
    NotFound,
    SkinLesionError,
    StorageUnavailable,
    TransientError,
)
from shared.heatmap import class_activation_of
from shared.messaging.heatmaps import HeatmapRequest
from shared.retention import RetentionPolicy
from shared.storage import ObjectStore

log = logging.getLogger(__name__)
blueprint = Blueprint("heatmaps", __name__, url_prefix="/api/v1/predictions")

# A worker's refusal (its reply's error code) becomes the same error here.
_REPLY_ERRORS: dict[str, type[SkinLesionError]] = {
    error.code: error for error in (Gone, NotFound, HeatmapUnavailable, StorageUnavailable)
}


class HeatmapTimeout(TransientError):
    """Raised when no worker drew a heat map in time: all busy, or none running."""

    code = "heatmap_timeout"


class HeatmapFailed(SkinLesionError):
    """Raised when a worker could not draw a heat map it should have (its log says why)."""

    code = "heatmap_failed"


@blueprint.get("/<job_id>/heatmap")
def get_heatmap(job_id: str) -> Response:
    """The heat map as image/png; 409 for a pending or failed prediction or a version without one."""
    store = context.store()
    result = stored_result(store, job_id)
    if result is None:
        raise HeatmapUnavailable(f"prediction {job_id} is still pending: ask for its heat map once it is done")
    class_activation_of(result)
    try:
        png = prediction_records.read_heatmap(store, job_id)
    except NotFound:
        png = _drawn_by_a_worker(store, job_id)
    if RetentionPolicy.from_settings(context.settings()).delete_on_delivery:
        _forget_delivered(store, job_id)
    # no-store: a deleted prediction's picture must not live on in a browser's cache.
    return Response(png, mimetype="image/png", headers={"Cache-Control": "no-store"})


def _forget_delivered(store: ObjectStore, job_id: str) -> None:
    """PREDICTION_RETENTION_DAYS=0: nothing is kept once delivered; the sweep catches a failure here."""
    try:
        prediction_records.remove_heatmap(store, job_id)
    except SkinLesionError as error:
        log.warning("could not delete the delivered heat map of %s yet: %s", job_id, error)


def _drawn_by_a_worker(store: ObjectStore, job_id: str) -> bytes:
    image_key = upload_key(store, job_id)
    if image_key is None:
        raise Gone(f"the image of prediction {job_id} is no longer stored")
    broker = context.broker_client()
    timeout_s = context.settings().predict_timeout_s
    pending = broker.request_heatmap(HeatmapRequest(job_id=job_id, image_key=image_key, requested_at=time.time()))
    try:
        answered = pending.done.wait(timeout_s)
    finally:
        broker.forget([pending])
    if not answered:
        raise HeatmapTimeout(f"no worker drew the heat map within {timeout_s:g} s; retry shortly")
    _raise_refusal(pending)
    return prediction_records.read_heatmap(store, job_id)


def _raise_refusal(pending: PendingHeatmap) -> None:
    """Raise what kept the worker from drawing the map, if anything did."""
    if pending.error is not None:
        raise pending.error
    error = pending.result.error
    if error is None:
        return
    raise _REPLY_ERRORS.get(error.get("code", ""), HeatmapFailed)(error.get("message", "no message"))
