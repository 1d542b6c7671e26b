"""A version's card as the services read it: typed, with the defaults older cards need.

The trainer writes the card (card.json, shared/model/card.py) and it holds much more than
serving needs: metrics per collection, the gate's decision, data provenance. This view names
the fields that are read (by workers, the gateway, insights and the trainer's gate) in one
place, and keeps the whole document for those who serve it whole (`GET /models/{version}`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from shared.errors import ModelUnavailable

ONNX_ARTIFACT = "model.onnx"
# What a card without `serving_artifact` (the oldest versions) is served from.
SERVING_ARTIFACT = ONNX_ARTIFACT


@dataclass(frozen=True)
class ModelCard:
    version: str
    # The global operating threshold on the calibrated probability.
    threshold: float
    # The file the version is served from; its name picks the runtime (shared/serving/runtime.py).
    serving_artifact: str = SERVING_ARTIFACT
    # Platt scaling {"method": "platt", "a", "b"}; None serves raw probabilities.
    calibration: dict[str, Any] | None = None
    # Thresholds chosen for the collections that had enough cases.
    collection_thresholds: dict[str, float] = field(default_factory=dict)
    # SHA-256 of each file, recorded at publication; empty on cards older than the record.
    artifacts: dict[str, str] = field(default_factory=dict)
    # The domain statistics' file and thresholds (shared/serving/domain.py); None before them.
    domain: dict[str, Any] | None = None
    # Metrics per split and collection ({"test": {...}, "collections": {...}}).
    metrics: dict[str, Any] = field(default_factory=dict)
    # The gate's decision that admitted the version; None for shipped or packaged ones.
    gate: dict[str, Any] | None = None
    # Where its training and evaluation images came from (collections, the external one's name).
    data: dict[str, Any] = field(default_factory=dict)
    created_at: float | None = None
    parent_version: str | None = None
    # The card as stored, every field.
    document: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def of(cls, card: ModelCard | dict[str, Any]) -> ModelCard:
        """`card` itself, or the view of a card document (card.json as read)."""
        if isinstance(card, ModelCard):
            return card
        if card.get("threshold") is None:
            raise ModelUnavailable(f"the card of model {card.get('version')!r} has no threshold")
        return cls(
            version=str(card.get("version", "")),
            threshold=float(card["threshold"]),
            serving_artifact=card.get("serving_artifact") or SERVING_ARTIFACT,
            calibration=card.get("calibration"),
            collection_thresholds={
                name: float(value) for name, value in (card.get("collection_thresholds") or {}).items()
            },
            artifacts=dict(card.get("artifacts") or {}),
            domain=card.get("domain"),
            metrics=card.get("metrics") or {},
            gate=card.get("gate"),
            data=card.get("data") or {},
            created_at=card.get("created_at"),
            parent_version=card.get("parent_version"),
            document=card,
        )
