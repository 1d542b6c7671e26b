"""`GET /api/v1/insights`: the dataset snapshot and how the production model performs;
`GET /api/v1/insights/drift`: the input drift of recent predictions per model version.

The snapshot and the drift record are whatever the insights service last wrote (null before
its first run); the model part comes from the production version's card (non-finite numbers
in it become null in every gateway response: see json_provider.py).
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, current_app, jsonify

from services.gateway.model_versions import external_name
from shared.errors import NotFound, ObjectNotFound
from shared.serving import registry
from shared.storage import ObjectStore, get_json, layout

blueprint = Blueprint("insights", __name__, url_prefix="/api/v1/insights")


@blueprint.get("")
def insights() -> Response:
    """`{"snapshot": <latest snapshot or null>, "model": <production performance or null>}`."""
    store: ObjectStore = current_app.extensions["store"]
    return jsonify({"snapshot": latest_snapshot(store), "model": production_performance(store)})


@blueprint.get("/drift")
def drift() -> Response:
    """`{"drift": <the insights service's drift record or null>}` (docs/insights.md, "Input drift")."""
    store: ObjectStore = current_app.extensions["store"]
    try:
        record = get_json(store, layout.INSIGHTS_DRIFT)
    except ObjectNotFound:
        record = None
    return jsonify({"drift": record})


def latest_snapshot(store: ObjectStore) -> dict[str, Any] | None:
    """The insights service's latest snapshot, or None before it has written one."""
    try:
        return get_json(store, layout.INSIGHTS_SNAPSHOT)
    except ObjectNotFound:
        return None


def production_performance(store: ObjectStore) -> dict[str, Any] | None:
    """Version, threshold, test-split and external metrics of production; None when there is none.

    `test` is null for a version whose card has no test evaluation (e.g. a hand-made card);
    `external` (another clinic's collection, named by `external_name`) is null for a version
    never evaluated on one.
    """
    version = registry.production_version(store)
    if version is None:
        return None
    try:
        card = registry.read_card(store, version)
    except NotFound:
        return None  # the alias names a version whose card is gone: nothing to show
    external = card.metrics.get("external") or None
    return {
        "version": version,
        "threshold": card.threshold,
        "test": card.metrics.get("test"),
        "external": external,
        "external_name": external_name(card) if external else None,
    }
