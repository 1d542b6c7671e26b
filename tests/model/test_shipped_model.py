"""The model shipped in models/ loads and answers in the serving runtime, and seeds a store."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from shared.serving.registry import (
    load_production,
    load_serving_model,
    publish_version,
    seed_from_directory,
    sha256_of,
)
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


def test_every_shipped_card_records_the_sha256_of_each_of_its_files():
    for folder in (MODELS / "versions").iterdir():
        card = json.loads((folder / "card.json").read_text())
        files = {path.name: sha256_of(path.read_bytes()) for path in folder.iterdir() if path.name != "card.json"}
        assert card["artifacts"] == files, folder.name


def test_an_empty_store_is_seeded_with_the_shipped_model_which_then_answers(tmp_path: Path):
    store = FilesystemStore(tmp_path)
    version = seed_from_directory(store, MODELS)
    served = load_production(store, threads=1)
    pixels = np.random.default_rng(0).integers(0, 256, (2, 224, 224, 3), dtype=np.uint8)
    probabilities = served.predict(pixels)
    assert served.version == version and probabilities.shape == (2,)
    assert np.all((probabilities >= 0) & (probabilities <= 1))


def test_the_shipped_model_judges_each_image_and_calls_flat_grey_unlike_its_training_images(tmp_path: Path):
    store = FilesystemStore(tmp_path)
    seed_from_directory(store, MODELS)
    served = load_production(store, threads=1)
    grey = np.full((1, 224, 224, 3), 128, np.uint8)
    outputs = served.run(grey)
    (judgement,) = served.judge_domain(outputs)
    assert judgement.unlike_training and judgement.score > 1.0
    assert judgement.not_dermoscopy  # twice as far as the caution: not read as dermoscopy
    assert outputs.class_activation.shape == (1, 7, 7)


def test_the_version_the_shipped_one_was_packaged_from_still_serves_without_a_judgement(tmp_path: Path):
    card = json.loads((_shipped_folder() / "card.json").read_text())
    older = MODELS / "versions" / card["packaged_from"]
    older_card = json.loads((older / "card.json").read_text())
    assert "domain" not in older_card
    store = FilesystemStore(tmp_path)
    publish_version(
        store,
        older_card["version"],
        {older_card["serving_artifact"]: (older / older_card["serving_artifact"]).read_bytes()},
        older_card,
    )
    served = load_serving_model(store, older_card["version"], threads=1)
    outputs = served.run(np.zeros((1, 224, 224, 3), np.uint8))
    assert served.domain is None and served.judge_domain(outputs) is None and outputs.class_activation is None
