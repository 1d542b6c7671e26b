"""Reading the parts of a request every blueprint needs: settings, store, broker, files."""

from __future__ import annotations

import io

from flask import current_app, request
from werkzeug.datastructures import FileStorage

from services.gateway.rpc import PredictionClient
from shared.errors import BadInput
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


def broker() -> PredictionClient:
    return current_app.extensions["prediction_client"]


def uploaded_files(max_files: int, max_bytes: int) -> list[tuple[str, bytes]]:
    """The request's `file` parts as (client file name, bytes), checked for shape and count.

    A file over `max_bytes` is returned with at least one byte too many: enough to know it is too large.
    """
    if request.mimetype != "multipart/form-data":
        raise UnsupportedRequest(
            f"send images as multipart/form-data in a 'file' field, not {request.mimetype or 'no content type'}"
        )
    files = request.files.getlist("file")
    if not files:
        raise BadInput("no 'file' field in the form; send one or more images as 'file'")
    if len(files) > max_files:
        raise BadInput(f"{len(files)} files sent; at most {max_files} per request")
    return [(upload.filename or "", _file_bytes(upload, max_bytes)) for upload in files]


def _file_bytes(upload: FileStorage, max_bytes: int) -> bytes:
    """An in-memory part's buffer as it is (UploadRequest keeps parts in memory); else read to the limit.

    `getvalue` hands over the buffer without copying it, so a 10 MiB file is held once, not twice.
    """
    if isinstance(upload.stream, io.BytesIO):
        return upload.stream.getvalue()
    return upload.stream.read(max_bytes + 1)
