"""The web UI: one HTML page and its ES modules, served as static files (no build step).

The page talks to the REST API like any other client; nothing here renders server data.
"""

from __future__ import annotations

from flask import Blueprint, Response

blueprint = Blueprint("ui", __name__, static_folder="static", static_url_path="/ui-static")

# Only our own files; images only from the page itself (blob: previews of chosen files).
# Inline scripts and styles are refused, so text from the server can never run as code.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)


@blueprint.get("/")
def index() -> Response:
    return blueprint.send_static_file("index.html")


@blueprint.after_request
def headers(response: Response) -> Response:
    # The files are not fingerprinted, so browsers revalidate (a cheap 304 by ETag) each load:
    # a new release is never hidden behind a stale cache.
    response.headers["Cache-Control"] = "no-cache"
    response.headers["X-Content-Type-Options"] = "nosniff"
    if response.mimetype == "text/html":
        response.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
        response.headers["Referrer-Policy"] = "no-referrer"
    return response
