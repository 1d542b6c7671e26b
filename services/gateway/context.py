"""Reading the parts of a request every blueprint needs: settings, store, broker, files, budgets."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import IO

from flask import current_app, request

from services.gateway.broker_client import BrokerClient
from services.gateway.quotas import QueuedJobs
from shared.errors import BadInput, ImageTooLarge, Overloaded
from shared.images import DecodeBudget, open_upload
from shared.settings import Settings
from shared.storage import ObjectStore


class UnsupportedRequest(BadInput):
    """Raised when a request body is not the multipart form an upload needs."""

    code = "unsupported_media_type"
    http_status = 415


def settings() -> Settings:
    return current_app.config["SETTINGS"]


def store() -> ObjectStore:
    return current_app.extensions["store"]


def broker_client() -> BrokerClient:
    return current_app.extensions["broker_client"]


def decode_budget() -> DecodeBudget:
    """The decoded pixels this gateway process may hold at once (MAX_DECODED_BYTES_PER_PROCESS)."""
    return current_app.extensions["decode_budget"]


def queued_jobs() -> QueuedJobs:
    return current_app.extensions["queued_jobs"]


def client_address() -> str:
    """Who sent the request: the peer, or the address the trusted proxy saw (PROXY_HOPS)."""
    return request.remote_addr or "unknown"


def audit_actor() -> dict[str, str | None]:
    """Who a write is recorded as (shared/audit.py): the credential it passed (the write token,
    or none when none is set) and where it came from."""
    return {
        "credential": "write-token" if settings().write_token else "anonymous",
        "address": client_address(),
        "origin": (request.headers.get("Origin") or "")[:200] or None,
    }


@contextmanager
def upload_slot() -> Iterator[None]:
    """One of the process's UPLOAD_SLOTS while files are checked and stored (503 after the timeout).

    Taken once the whole body has arrived (the server hands over only whole requests), so a
    slow client never holds one. The work is CPU-bound: more at once would not be faster.
    """
    slots: threading.BoundedSemaphore = current_app.extensions["upload_slots"]
    if not slots.acquire(timeout=settings().predict_timeout_s):
        raise Overloaded("the gateway is busy checking other uploads; retry shortly")
    try:
        yield
    finally:
        slots.release()


@dataclass(frozen=True)
class UploadedFile:
    """One `file` part of the form: the client's file name and its (spooled) bytes."""

    filename: str
    stream: IO[bytes]

    def read(self) -> bytes:
        """The whole part (at most MAX_UPLOAD_BYTES: the parser stopped a larger one)."""
        self.stream.seek(0)
        return self.stream.read()


def uploaded_files(max_files: int) -> list[UploadedFile]:
    """The request's `file` parts, checked for shape and count; their bytes are read one at a time."""
    if request.mimetype != "multipart/form-data":
        raise UnsupportedRequest(
            f"send images as multipart/form-data in a 'file' field, not {request.mimetype or 'no content type'}"
        )
    files = request.files.getlist("file")
    if not files:
        raise BadInput("no 'file' field in the form; send one or more images as 'file'")
    if len(files) > max_files:
        raise BadInput(f"{len(files)} files sent; at most {max_files} per request")
    return [UploadedFile(upload.filename or "", upload.stream) for upload in files]


def check_request_pixels(files: list[UploadedFile], *, reduce_to: tuple[int, int] | None, skip_bad: bool) -> None:
    """413 if the request's images together decode to more than MAX_DECODED_BYTES_PER_REQUEST.

    From each file's header alone, before any pixel is decoded: eight 40 MP PNGs of 120 KB each
    are refused for the 1.3 GB they would decode to. A file that is not a valid image raises
    (naming it) unless `skip_bad`, where a later check reports it file by file. Nothing is kept:
    the decode that follows opens each file again (its header and a walk of its structure, a
    few milliseconds), which costs less than holding every file of the request at once.
    """
    config = settings()
    total = 0
    for index, file in enumerate(files):
        try:
            opened = open_upload(
                file.read(), max_bytes=config.max_upload_bytes, max_pixels=config.max_image_pixels, reduce_to=reduce_to
            )
        except BadInput as error:
            if skip_bad:
                continue
            raise name_file(error, index, file.filename) from None
        total += opened.decode_bytes
    if total > config.max_decoded_bytes_per_request:
        raise ImageTooLarge(
            f"the {len(files)} images of this request decode to {total // 1_000_000} MB of pixels; at most"
            f" {config.max_decoded_bytes_per_request // 1_000_000} MB per request: send them in several requests"
        )


def name_file(error: BadInput, index: int, filename: str) -> BadInput:
    """The error with the file it is about: its place in the form and (shortened) client name.

    The name is only echoed, never used as a path.
    """
    error.args = (f"file {index + 1} ({filename[:100]!r}): {error}",)
    return error
