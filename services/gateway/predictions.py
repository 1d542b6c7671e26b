"""`/api/v1/predictions`: upload images, get predictions (synchronously or by polling)."""

from __future__ import annotations

import logging
import re
import time
import uuid
from datetime import UTC, datetime

from flask import Blueprint, Response, jsonify, request

from services.gateway import context
from services.gateway.errors import error_response
from services.gateway.rpc import PendingReply
from shared.errors import BadInput, NotFound, SkinLesionError
from shared.images import DecodedImage, decode_upload
from shared.messaging.schemas import PredictionJob, PredictionResult
from shared.settings import Settings
from shared.storage import get_json, layout

log = logging.getLogger(__name__)
blueprint = Blueprint("predictions", __name__, url_prefix="/api/v1/predictions")

NOT_A_DIAGNOSIS = "Research and teaching tool only; not a diagnosis. See a dermatologist about any lesion."
# fullmatch and [0-9], not match and \d: "$" also matches before a trailing newline, and \d takes
# any script's digits; either would let an id through that only the store then chokes on.
_JOB_ID = re.compile(r"(?P<date>[0-9]{8})-[0-9a-f]{32}")


def new_job_id(now: datetime) -> str:
    """Job ids carry their day, so the upload's key can be found again from the id alone."""
    return f"{now:%Y%m%d}-{uuid.uuid4().hex}"


def _parse_job_id(job_id: str) -> datetime:
    match = _JOB_ID.fullmatch(job_id)
    if match is not None:
        try:
            # The pattern allows any eight digits; strptime refuses a day that does not exist.
            return datetime.strptime(match["date"], "%Y%m%d").replace(tzinfo=UTC)
        except ValueError:
            pass
    raise BadInput(f"{job_id[:80]!r} is not a prediction id")


def _check_all(uploads: list[tuple[str, bytes]], settings: Settings) -> list[DecodedImage]:
    """Decode every file before anything is stored: one bad file refuses the whole request."""
    checked = []
    for index, (filename, data) in enumerate(uploads):
        try:
            checked.append(
                decode_upload(data, max_bytes=settings.max_upload_bytes, max_pixels=settings.max_image_pixels)
            )
        except BadInput as error:
            # The client's file name is echoed (shortened) so they know which file; it is
            # never used as a path.
            error.args = (f"file {index + 1} ({filename[:100]!r}): {error}",)
            raise
    return checked


@blueprint.post("")
def create_predictions() -> Response | tuple[Response, int]:
    started = time.monotonic()
    settings = context.settings()
    uploads = context.uploaded_files(settings.max_files_per_request, settings.max_upload_bytes)
    images = _check_all(uploads, settings)
    now = datetime.now(UTC)
    jobs = []
    for (_, data), image in zip(uploads, images, strict=True):
        job_id = new_job_id(now)
        key = layout.prediction_upload(job_id, image.extension, now)
        context.store().put(key, data, image.content_type)
        jobs.append(PredictionJob(job_id=job_id, image_key=key, submitted_at=time.time()))
    wait = request.args.get("wait", "true").lower() not in {"false", "0", "no"}
    try:
        pending = context.broker().submit(jobs, want_replies=wait)
    except SkinLesionError:
        _withdraw_uploads(jobs)
        raise
    if not wait:
        body = [{"id": job.job_id, "status": "pending", "url": f"/api/v1/predictions/{job.job_id}"} for job in jobs]
        return jsonify(body[0] if len(body) == 1 else {"predictions": body}), 202
    return _await_answers(pending, started, settings.predict_timeout_s)


def _withdraw_uploads(jobs: list[PredictionJob]) -> None:
    """A refused request (queue full, broker gone) leaves no uploads behind.

    Jobs of a multi-file request published before the refusal still reach a worker; with
    their image gone they fail fast ("not found") instead of costing an inference, which
    matters because refusals happen exactly when the workers are the bottleneck.
    """
    store = context.store()
    for job in jobs:
        try:
            store.delete(job.image_key)
        except SkinLesionError:
            log.warning("could not withdraw upload %s of a refused request", job.image_key, exc_info=True)


def _await_answers(pending: list[PendingReply], started: float, timeout_s: float) -> Response | tuple[Response, int]:
    deadline = started + timeout_s
    try:
        for reply in pending:
            reply.done.wait(max(deadline - time.monotonic(), 0))
    finally:
        context.broker().forget(pending)
    late = [reply.job_id for reply in pending if not reply.done.is_set() or reply.error is not None]
    if late:
        return error_response(
            504,
            "timeout",
            "the answer did not come in time; poll the ids for the result",
            ids=late,
            urls=[f"/api/v1/predictions/{job_id}" for job_id in late],
        )
    latency_ms = round((time.monotonic() - started) * 1000, 1)
    answers = [_answer(reply.result, latency_ms) for reply in pending]
    failed = [answer for answer in answers if answer.get("status") == "failed"]
    status = 422 if failed and len(failed) == len(answers) else 200
    if len(answers) == 1:
        return (jsonify(answers[0]) if status == 200 else error_response(422, **failed[0]["error"])), status
    return jsonify({"predictions": answers, "note": NOT_A_DIAGNOSIS}), status


def _answer(result: PredictionResult, latency_ms: float | None) -> dict[str, object]:
    answer = result.public()
    if latency_ms is not None:
        answer["latency_ms"] = latency_ms
    answer["note"] = NOT_A_DIAGNOSIS
    return answer


@blueprint.get("/<job_id>")
def get_prediction(job_id: str) -> Response | tuple[Response, int]:
    day = _parse_job_id(job_id)
    store = context.store()
    try:
        result = PredictionResult(**get_json(store, layout.prediction_result(job_id)))
    except NotFound:
        uploaded = any(store.exists(layout.prediction_upload(job_id, ext, day)) for ext in ("jpg", "png"))
        if not uploaded:
            raise NotFound(f"no prediction {job_id}") from None
        return jsonify({"id": job_id, "status": "pending"}), 200
    except TypeError as error:
        raise NotFound(f"no readable result for {job_id}: {error}") from error
    return jsonify(_answer(result, None)), 200
