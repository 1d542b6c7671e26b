"""Packaging a trained model for the chosen serving runtime: the artifact, its parity check,
the evaluation through it and the card all follow the runtime."""

from __future__ import annotations

import json
from pathlib import Path

import keras
import numpy as np

from shared.model import card as cards
from shared.model.data import load_folder
from shared.model.serving import ServingModel, calibrate
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


def test_the_threshold_moves_down_until_the_external_sensitivity_target_holds_too():
    rng = np.random.default_rng(0)
    labels = np.repeat([0, 1], 400)
    in_domain = np.clip(rng.normal(0.3 + 0.4 * labels, 0.1), 0.01, 0.99)
    # Another clinic: the same malignant cases score lower, so the in-domain threshold misses more.
    external = np.clip(rng.normal(0.3 + 0.25 * labels, 0.1), 0.01, 0.99)

    alone = cards.operating_point(labels, in_domain, 0.90)
    travelling = cards.operating_point(
        labels, in_domain, 0.90, external=(labels, external), external_target_sensitivity=0.85
    )

    assert alone.rule["chosen_by"] == "validation" and "external_threshold" not in alone.rule
    assert travelling.rule["chosen_by"] == "external" and travelling.threshold < alone.threshold
    assert travelling.calibration == alone.calibration, "calibration stays fitted on validation"
    calibrated = calibrate(external, travelling.calibration)
    assert np.mean(calibrated[labels == 1] >= travelling.threshold) >= 0.85
    assert np.mean(calibrate(in_domain, alone.calibration)[labels == 1] >= alone.threshold) >= 0.90


def test_packaging_with_an_external_collection_reports_it_in_the_card(
    tiny_model: keras.Model, dataset_root: Path, tmp_path: Path
):
    train_data, test = load_folder(dataset_root / "train"), load_folder(dataset_root / "test")
    result = TrainingResult(tiny_model, [], tiny_model.predict(train_data.pixels, verbose=0).reshape(-1))
    candidate = cards.package(
        "v1",
        result,
        TrainingConfig.quick(),
        (train_data, train_data, test),
        train_source="tiny",
        external=test,
        external_source="somewhere/else",
        external_name="Other clinic",
        runtime="litert",
    )
    card = candidate.card
    assert candidate.external == card["metrics"]["external"] and card["metrics"]["external"]["n"] == len(test)
    assert card["data"]["external"] == {
        "source": "somewhere/else",
        "name": "Other clinic",
        "n": len(test),
        "n_malignant": int(test.labels.sum()),
        "content_hash": test.content_hash,
    }
    assert card["threshold_rule"]["external_target"] == 0.85
    assert card["threshold"] == min(
        card["threshold_rule"]["validation_threshold"], card["threshold_rule"]["external_threshold"]
    )
