"""The model shipped in models/ loads and answers in the serving runtime, and seeds a store."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from shared.model.registry import load_production, seed_from_directory
from shared.settings import REPO_ROOT
from shared.storage import FilesystemStore

MODELS = REPO_ROOT / "models"
MAX_ARTIFACT_BYTES = 15 * 1024 * 1024


def _shipped_folder() -> Path:
    version = json.loads((MODELS / "aliases" / "production.json").read_text())["version"]
    return MODELS / "versions" / version


def test_the_shipped_card_has_what_serving_and_the_gate_need():
    card = json.loads((_shipped_folder() / "card.json").read_text())
    assert {"version", "threshold", "calibration", "serving_artifact", "metrics", "data", "note"} <= card.keys()
    assert card["metrics"]["test"]["auc"] > 0.85 and "not for clinical use" in card["note"]
    assert (_shipped_folder() / card["serving_artifact"]).stat().st_size < MAX_ARTIFACT_BYTES


def test_an_empty_store_is_seeded_with_the_shipped_model_which_then_answers(tmp_path: Path):
    store = FilesystemStore(tmp_path)
    version = seed_from_directory(store, MODELS)
    served = load_production(store, threads=1)
    pixels = np.random.default_rng(0).integers(0, 256, (2, 224, 224, 3), dtype=np.uint8)
    probabilities = served.predict(pixels)
    assert served.version == version and probabilities.shape == (2,)
    assert np.all((probabilities >= 0) & (probabilities <= 1))
