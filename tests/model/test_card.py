"""Packaging a trained model for the chosen serving runtime: the artifact, its parity check,
the evaluation through it and the card all follow the runtime."""

from __future__ import annotations

import json
from pathlib import Path

import keras
import numpy as np

from shared.model import card as cards
from shared.model.data import load_folder
from shared.model.serving import ServingModel
from shared.model.training import TrainingConfig, TrainingResult


def test_packaging_for_litert_writes_a_tflite_version_whose_card_names_it(
    tiny_model: keras.Model, dataset_root: Path, tmp_path: Path
):
    train_data, test = load_folder(dataset_root / "train"), load_folder(dataset_root / "test")
    result = TrainingResult(tiny_model, [], tiny_model.predict(train_data.pixels, verbose=0).reshape(-1))
    candidate = cards.package(
        "v1", result, TrainingConfig.quick(), (train_data, train_data, test), train_source="tiny", runtime="litert"
    )
    cards.write_version(tmp_path, {candidate.artifact_name: candidate.artifact}, candidate.card)

    card = json.loads((tmp_path / "card.json").read_text())
    assert candidate.artifact_name == card["serving_artifact"] == "model.tflite"
    assert sorted(path.name for path in tmp_path.iterdir()) == ["card.json", "model.tflite"]
    assert card["parity"]["runtime"] == "litert" and card["parity"]["artifact"] == "model.tflite"
    assert card["parity"]["max_abs_diff"] <= 1e-4 and card["parity"]["images"] == len(test)
    assert card["metrics"]["test"]["n"] == len(test)
    served = ServingModel.from_bytes("v1", (tmp_path / "model.tflite").read_bytes(), card)
    probabilities = served.predict(test.pixels[:3])
    assert served.runtime.name == "litert" and np.all((probabilities >= 0) & (probabilities <= 1))
