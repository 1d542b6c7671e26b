"""`GET /api/v1/audit`: the audit log (shared/audit.py), newest first, with the write token."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify, request

from services.gateway import context
from services.gateway.auth import require_write_token
from shared import audit
from shared.errors import BadInput

blueprint = Blueprint("audit", __name__, url_prefix="/api/v1/audit")


def _limit() -> int:
    text = request.args.get("limit")
    if text is None:
        return audit.DEFAULT_LIMIT
    if not text.isascii() or not text.isdigit() or not 1 <= int(text) <= audit.MAX_LIMIT:
        raise BadInput(f"limit must be a whole number from 1 to {audit.MAX_LIMIT}; got {text[:20]!r}")
    return int(text)


def _before() -> str | None:
    before = request.args.get("before")
    if before is not None and not audit.ENTRY_ID.fullmatch(before):
        raise BadInput(f"{before[:80]!r} is not an audit entry id (the `id` of an entry, or `next_before`)")
    return before


@blueprint.get("")
@require_write_token
def read() -> Response:
    """Reading it needs the token too: it names addresses and what each credential did."""
    entries, next_before = audit.read_page(context.store(), limit=_limit(), before=_before())
    return jsonify({"entries": entries, "next_before": next_before})
