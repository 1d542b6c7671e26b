"""`/api/v1/predictions`: upload images, get predictions (synchronously or by polling)."""

from __future__ import annotations

import logging
import re
import tempfile
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import IO

from flask import Blueprint, Response, jsonify, request

from services.gateway import context
from services.gateway.auth import require_write_token
from services.gateway.broker_client import PendingReply
from services.gateway.errors import error_response
from services.gateway.request_body import SPOOL_ABOVE_BYTES
from shared import audit, prediction_records
from shared.dataset import check_collection_name
from shared.errors import BadInput, Gone, NotFound, SkinLesionError
from shared.images import (
    MODEL_INPUT_EXTENSION,
    MODEL_INPUT_SIZE,
    decoded_upload,
    encode_model_input,
    strip_metadata,
    to_model_input,
    wants_model_copy,
)
from shared.messaging.schemas import PredictionJob, PredictionResult
from shared.retention import RetentionPolicy
from shared.settings import Settings
from shared.storage import ObjectStore, layout

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


@dataclass(frozen=True)
class CheckedUpload:
    """What is kept of a file once checked: the bytes to store and, for a large one, its model input."""

    extension: str
    content_type: str
    stored: IO[bytes]
    model_input: bytes | None


def _check_all(files: list[context.UploadedFile], settings: Settings) -> list[CheckedUpload]:
    """Check every file before anything is stored: one bad file refuses the whole request.

    The request's pixels are bounded from the headers first; then each file is decoded alone,
    within the process's decode budget, and only what is stored and the model input are kept.
    JPEGs are decoded at the scale the model needs (shared/images.py): every byte of the file
    is read, but only the pixels the model input is made from are computed.
    """
    context.check_request_pixels(files, reduce_to=MODEL_INPUT_SIZE, skip_bad=False)
    checked = []
    for index, file in enumerate(files):
        try:
            checked.append(_check_one(file.read(), settings))
        except BadInput as error:
            raise context.name_file(error, index, file.filename) from None
    return checked


def _check_one(data: bytes, settings: Settings) -> CheckedUpload:
    with decoded_upload(
        data,
        max_bytes=settings.max_upload_bytes,
        max_pixels=settings.max_image_pixels,
        budget=context.decode_budget(),
        wait_s=settings.predict_timeout_s,
        reduce_to=MODEL_INPUT_SIZE,
    ) as image:
        # What is stored has no EXIF, XMP, ICC or text: a phone photo's GPS position never lands.
        # Kept on disk above a megabyte until every file is checked; _store_uploads closes it.
        stored = tempfile.SpooledTemporaryFile(max_size=SPOOL_ABOVE_BYTES)  # noqa: SIM115
        stored.write(strip_metadata(data, image))
        # A large upload's model input is stored beside it: the worker then reads 150 KB of
        # pixels instead of decoding the upload a second time.
        model_input = encode_model_input(to_model_input(image.rgb)) if wants_model_copy(image) else None
        return CheckedUpload(image.extension, image.content_type, stored, model_input)


@blueprint.post("")
def create_predictions() -> Response | tuple[Response, int]:
    started = time.monotonic()
    settings = context.settings()
    files = context.uploaded_files(settings.max_files_per_request)
    # A collection with its own threshold (the card's) is judged by it; any other, by the global one.
    collection = request.form.get("collection") or None
    if collection is not None:
        check_collection_name(collection)
    now = datetime.now(UTC)
    job_ids = [new_job_id(now) for _ in files]
    queued = context.queued_jobs()
    queued.admit(context.client_address(), job_ids)
    wait = request.args.get("wait", "true").lower() not in {"false", "0", "no"}
    try:
        with context.upload_slot():
            checked = _check_all(files, settings)
        jobs, stored_keys = _store_uploads(job_ids, checked, collection, now)
        try:
            pending = context.broker_client().submit(jobs, want_replies=wait)
        except SkinLesionError:
            _withdraw_uploads(stored_keys)
            raise
    except Exception:
        for job_id in job_ids:
            queued.release(job_id)
        raise
    if not wait:
        body = [{"id": job.job_id, "status": "pending", "url": f"/api/v1/predictions/{job.job_id}"} for job in jobs]
        return jsonify(body[0] if len(body) == 1 else {"predictions": body}), 202
    return _await_answers(pending, started, settings.predict_timeout_s)


def _store_uploads(
    job_ids: list[str], checked: list[CheckedUpload], collection: str | None, now: datetime
) -> tuple[list[PredictionJob], list[str]]:
    """Store each checked upload (and its model input) under its job id: (jobs, stored keys)."""
    store = context.store()
    jobs = []
    stored_keys: list[str] = []
    for job_id, upload in zip(job_ids, checked, strict=True):
        key = layout.prediction_upload(job_id, upload.extension, now)
        upload.stored.seek(0)
        store.put(key, upload.stored.read(), upload.content_type)
        upload.stored.close()
        stored_keys.append(key)
        image_key = key
        if upload.model_input is not None:
            # Pixels only; retention and DELETE remove it with the upload.
            image_key = layout.prediction_upload(job_id, MODEL_INPUT_EXTENSION, now)
            store.put(image_key, upload.model_input, "application/octet-stream")
            stored_keys.append(image_key)
        jobs.append(PredictionJob(job_id=job_id, image_key=image_key, submitted_at=time.time(), collection=collection))
    return jobs, stored_keys


def _withdraw_uploads(keys: list[str]) -> None:
    """A refused request (queue full, broker gone) leaves no uploads behind.

    Jobs of a multi-file request published before the refusal still reach a worker; with
    their image gone they fail fast ("not found") instead of costing an inference, which
    matters because refusals happen exactly when the workers are the bottleneck.
    """
    store = context.store()
    for key in keys:
        try:
            store.delete(key)
        except SkinLesionError:
            log.warning("could not withdraw upload %s of a refused request", key, exc_info=True)


def _await_answers(pending: list[PendingReply], started: float, timeout_s: float) -> Response | tuple[Response, int]:
    deadline = started + timeout_s
    try:
        for reply in pending:
            reply.done.wait(max(deadline - time.monotonic(), 0))
    finally:
        context.broker_client().forget(pending)
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
    if _policy().delete_on_delivery:
        for reply in pending:
            _forget_delivered(reply.job_id)
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


def _policy() -> RetentionPolicy:
    return RetentionPolicy.from_settings(context.settings())


def _forget_delivered(job_id: str) -> None:
    """PREDICTION_RETENTION_DAYS=0: the answer is out, so nothing of the job is kept.

    A store that fails here costs the client nothing; the sweep deletes it within the hour.
    """
    try:
        prediction_records.forget(context.store(), job_id, _parse_job_id(job_id), "delivered")
    except SkinLesionError as error:
        log.warning("could not delete delivered prediction %s yet: %s", job_id, error)


def upload_key(store: ObjectStore, job_id: str) -> str | None:
    """Where the job's uploaded image is stored; None when it is not (any more)."""
    return prediction_records.upload_key(store, job_id, _parse_job_id(job_id))


_GONE_MESSAGES = {
    "delivered": "was deleted once its answer was delivered (this system keeps no prediction after delivery)",
    "deleted on request": "was deleted on request",
}


def _gone(job_id: str, reason: str) -> Gone:
    policy = _policy()
    message = _GONE_MESSAGES.get(reason, f"has expired: images and results are {policy.describe()}")
    return Gone(f"prediction {job_id} {message}")


def stored_result(store: ObjectStore, job_id: str) -> PredictionResult | None:
    """The job's result, or None while it is pending.

    Raises BadInput for a malformed id, Gone (410) once deleted or past the retention, and
    NotFound for an id that was never accepted.
    """
    day = _parse_job_id(job_id)
    policy = _policy()
    now = time.time()
    try:
        result = prediction_records.read_result(store, job_id)
    except TypeError as error:
        raise NotFound(f"no readable result for {job_id}: {error}") from error
    if result is None:
        reason = prediction_records.deletion_reason(store, job_id)
        if reason is not None:
            raise _gone(job_id, reason)
        if upload_key(store, job_id) is not None:
            return None
        if policy.day_may_have_expired(day, now):
            raise _gone(job_id, "expired")
        raise NotFound(f"no prediction {job_id}")
    if policy.is_expired(result.submitted_at, now):  # the sweep has not come by yet
        raise _gone(job_id, "expired")
    return result


@blueprint.get("/<job_id>")
def get_prediction(job_id: str) -> Response | tuple[Response, int]:
    """The result, "pending", or 410 Gone once deleted or past the retention."""
    result = stored_result(context.store(), job_id)
    if result is None:
        return jsonify({"id": job_id, "status": "pending"}), 200
    answer = _answer(result, None)
    if _policy().delete_on_delivery:
        _forget_delivered(job_id)
    return jsonify(answer), 200


@blueprint.delete("/<job_id>")
@require_write_token
def delete_prediction(job_id: str) -> Response | tuple[Response, int]:
    """Delete the upload and the result (a queued job is then answered "not found", never stored).

    Idempotent: deleting again, or deleting what retention already removed, answers 204.
    """
    day = _parse_job_id(job_id)
    store = context.store()
    stored = prediction_records.has_result(store, job_id) or upload_key(store, job_id) is not None
    if stored:
        # Recorded before anything is deleted: a store that refuses it refuses the deletion (503).
        audit.record(store, "prediction_deleted", context.audit_actor(), job_id=job_id)
        prediction_records.forget(store, job_id, day, "deleted on request")
        log.info("prediction %s deleted on request", job_id)
    elif prediction_records.deletion_reason(store, job_id) is None and not _policy().day_may_have_expired(
        day, time.time()
    ):
        raise NotFound(f"no prediction {job_id}")
    return Response(status=204)
