"""Reading the parts of a request every blueprint needs: settings, store, broker, files."""

from __future__ import annotations

from flask import current_app, request

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

    Each file is read to one byte past `max_bytes`: enough to know it is too large.
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
    return [(upload.filename or "", upload.stream.read(max_bytes + 1)) for upload in files]
