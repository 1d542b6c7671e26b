"""`/api/v1/models`: versions, their cards, and promotion (also the way to roll back)."""

from __future__ import annotations

import re
from typing import Any

from flask import Blueprint, Response, jsonify, request

from services.gateway import context
from services.gateway.auth import require_write_token
from shared import audit
from shared.errors import BadInput
from shared.messaging.topology import EVENT_MODEL_PROMOTED
from shared.serving import registry
from shared.serving.card import ModelCard

blueprint = Blueprint("models", __name__, url_prefix="/api/v1/models")

# fullmatch: "$" would also match before a trailing newline (see predictions._JOB_ID).
_VERSION = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
SUMMARY_METRICS = ("n", "auc", "auc_ci95", "sensitivity", "specificity", "balanced_accuracy", "ece")
# A collection's line: its headline metrics, its size, and the threshold its figures were taken at
# (`threshold_collection`: the collection whose own threshold that is, or null for the global one).
COLLECTION_METRICS = (*SUMMARY_METRICS, "n_malignant", "threshold", "threshold_collection", "external")


def _checked_version(version: str) -> str:
    if not _VERSION.fullmatch(version):
        raise BadInput(f"{version[:80]!r} is not a model version name")
    return version


def _summary(card: ModelCard, production: str | None) -> dict[str, Any]:
    """The list's entry: test metrics, external ones (another clinic's images) or null for a
    version never evaluated on such a collection, and each collection's held-out metrics (an
    empty object for a card made before collections)."""
    test_metrics = card.metrics.get("test") or {}
    external_metrics = card.metrics.get("external")
    external_summary = {name: external_metrics.get(name) for name in SUMMARY_METRICS} if external_metrics else None
    return {
        "version": card.version,
        "created_at": card.created_at,
        "parent_version": card.parent_version,
        "threshold": card.threshold,
        "is_production": card.version == production,
        "metrics": {name: test_metrics.get(name) for name in SUMMARY_METRICS},
        "external_metrics": external_summary,
        "external_name": external_name(card) if external_metrics else None,
        "collections": collection_summaries(card.metrics.get("collections")),
        "collection_thresholds": dict(card.collection_thresholds),
    }


def collection_summaries(collections: dict[str, Any] | None) -> dict[str, Any]:
    """name -> that collection's line; `external` is false unless the card says so."""
    summaries = {}
    for name, found in (collections or {}).items():
        summary = {key: found.get(key) for key in COLLECTION_METRICS}
        summary["external"] = bool(found.get("external"))
        summaries[name] = summary
    return summaries


def external_name(card: ModelCard) -> str | None:
    """The label of the card's external collection (e.g. "Derm7pt"), or None when unnamed."""
    collection = card.data.get("external") or {}
    return collection.get("name")


@blueprint.get("")
def list_models() -> Response:
    store = context.store()
    production = registry.production_version(store)
    cards = [registry.read_card(store, version) for version in reversed(registry.list_versions(store))]
    return jsonify({"production": production, "versions": [_summary(card, production) for card in cards]})


@blueprint.get("/<version>")
def get_model(version: str) -> Response:
    store = context.store()
    card = registry.read_card(store, _checked_version(version))
    return jsonify({**card.document, "is_production": version == registry.production_version(store)})


@blueprint.post("/<version>/promote")
@require_write_token
def promote(version: str) -> Response:
    """Move production to `version`; workers follow on the `model.promoted` event."""
    body = request.get_json(silent=True) or {}
    reason = str(body.get("reason") or "promoted through the API")[:200] if isinstance(body, dict) else ""
    reason = reason or "promoted through the API"
    store = context.store()
    card = registry.read_card(store, _checked_version(version))  # 404 before anything is recorded
    current = registry.production_version(store)
    if current != version:  # promoting production again changes nothing: nothing to record
        # Recorded first: a store that refuses the entry refuses the promotion too (503).
        action = "rollback" if audit.is_rollback(version, current) else "promote"
        audit.record(
            store,
            action,
            context.audit_actor(),
            reason=reason,
            version=version,
            **{"from": current, "to": version},
            gate_digest=audit.gate_digest(card.gate),
        )
    alias = registry.promote(store, version, reason=reason)
    context.broker_client().publish_event(EVENT_MODEL_PROMOTED, {"version": version, "previous": alias["previous"]})
    return jsonify(alias)
