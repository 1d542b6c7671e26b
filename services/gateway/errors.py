"""The one place errors become HTTP answers: `{"error": {"code", "message"}}`."""

from __future__ import annotations

import logging

from flask import Flask, Response, jsonify
from werkzeug.exceptions import HTTPException

from shared.errors import BadInput, NotFound, Overloaded, SkinLesionError, TransientError

log = logging.getLogger(__name__)

RETRY_AFTER_S = 2


def error_response(status: int, code: str, message: str, **extra: object) -> Response:
    response = jsonify({"error": {"code": code, "message": message, **extra}})
    response.status_code = status
    if status in {429, 503}:
        response.headers["Retry-After"] = str(RETRY_AFTER_S)
    return response


def init_app(app: Flask) -> None:
    @app.errorhandler(BadInput)
    def bad_input(error: BadInput) -> Response:
        return error_response(error.http_status, error.code, str(error))

    @app.errorhandler(NotFound)
    def not_found(error: NotFound) -> Response:
        return error_response(error.http_status, error.code, str(error))  # 404, or 410 Gone

    @app.errorhandler(TransientError)
    def unavailable(error: TransientError) -> Response:
        if not isinstance(error, Overloaded):
            log.warning("answering 503: %s", error)
        return error_response(503, error.code, str(error))

    @app.errorhandler(SkinLesionError)
    def internal(error: SkinLesionError) -> Response:
        log.exception("unexpected project error")
        return error_response(500, error.code, "internal error; see the gateway log")

    @app.errorhandler(HTTPException)
    def http_error(error: HTTPException) -> Response:
        code = (error.name or "error").lower().replace(" ", "_")
        return error_response(error.code or 500, code, error.description or error.name)
