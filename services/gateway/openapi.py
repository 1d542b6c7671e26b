"""`GET /api/v1/openapi.json`: the API's OpenAPI description, served as the file says it.

The document is hand-written next to the code (openapi.json) and checked against the live
gateway by schemathesis (tests/services/test_openapi_contract.py), which also fails when a
Flask route under /api/v1 is missing from it.
"""

from __future__ import annotations

from pathlib import Path

from flask import Blueprint, Response

blueprint = Blueprint("openapi", __name__)

DOCUMENT_PATH = Path(__file__).with_name("openapi.json")
# Read once at import: the file is part of the release, not something that changes at run time.
_DOCUMENT = DOCUMENT_PATH.read_bytes()


@blueprint.get("/api/v1/openapi.json")
def openapi_document() -> Response:
    return Response(_DOCUMENT, mimetype="application/json")
