"""Packaging a trained model for the chosen serving runtime: the artifact, its parity check,
the evaluation through it and the card all follow the runtime."""

from __future__ import annotations

import json
from pathlib import Path

import keras
import numpy as np

from shared.model import card as cards
from shared.model.data import CollectionImages, load_collection_folder, load_folder
from shared.model.training import TrainingConfig, TrainingResult
from shared.serving.runtime import ServingModel, calibrate


def _collections(dataset_root: Path) -> list[CollectionImages]:
    """HAM10000-like `dataset_root` (train/ and test/), and its test/ again as an external collection."""
    return [
        load_collection_folder("ham", dataset_root),
        CollectionImages("elsewhere", True, None, load_folder(dataset_root / "test", collection="elsewhere")),
    ]


def _package(tiny_model: keras.Model, dataset_root: Path, runtime: str = "litert") -> cards.Candidate:
    collections = _collections(dataset_root)
    train_data = collections[0].train
    result = TrainingResult(tiny_model, [], tiny_model.predict(train_data.pixels, verbose=0).reshape(-1))
    return cards.package(
        "v1", result, TrainingConfig.quick(), train_data, train_data, collections, source="tiny", runtime=runtime
    )


def test_packaging_for_litert_writes_a_tflite_version_whose_card_names_it(
    tiny_model: keras.Model, dataset_root: Path, tmp_path: Path
):
    candidate = _package(tiny_model, dataset_root)
    cards.write_version(tmp_path, {candidate.artifact_name: candidate.artifact}, candidate.card)

    card = json.loads((tmp_path / "card.json").read_text())
    test = load_folder(dataset_root / "test")
    assert candidate.artifact_name == card["serving_artifact"] == "model.tflite"
    assert sorted(path.name for path in tmp_path.iterdir()) == ["card.json", "model.tflite"]
    assert card["parity"]["runtime"] == "litert" and card["parity"]["artifact"] == "model.tflite"
    # Parity is checked on every held-out image: ham's test part and the external collection.
    assert card["parity"]["max_abs_diff"] <= 1e-4 and card["parity"]["images"] == 2 * len(test)
    assert card["metrics"]["test"]["n"] == len(test)
    served = ServingModel.from_bytes("v1", (tmp_path / "model.tflite").read_bytes(), card)
    probabilities = served.predict(test.pixels[:3])
    assert served.runtime.name == "litert" and np.all((probabilities >= 0) & (probabilities <= 1))


def test_each_collection_with_enough_cases_gets_its_own_threshold_and_the_global_one_is_the_pooled_one():
    rng = np.random.default_rng(0)
    labels = np.repeat([0, 1, 0, 1, 0, 1], [400, 400, 200, 200, 50, 20])
    collections = {
        "home": np.arange(0, 800),
        "clinic": np.arange(800, 1200),
        "small": np.arange(1200, 1270),  # 20 malignant: too few for a threshold of its own
    }
    # The clinic's malignant cases score lower: a threshold chosen on the pooled images misses more there.
    shift = np.where(np.arange(len(labels)) < 800, 0.4, 0.25)
    raw = np.clip(rng.normal(0.3 + shift * labels, 0.1), 0.01, 0.99)

    point = cards.operating_point(labels, raw, 0.90, sensitivity_floor=0.85, collections=collections)

    assert sorted(point.collection_thresholds) == ["clinic", "home"]
    assert point.collection_thresholds["clinic"] < point.threshold < point.collection_thresholds["home"]
    assert point.threshold == point.rule["validation_threshold"]
    calibrated = calibrate(raw, point.calibration)
    for name, members in [("home", collections["home"]), ("clinic", collections["clinic"]), ("", np.arange(1270))]:
        threshold = point.collection_thresholds.get(name, point.threshold)
        assert np.mean(calibrated[members][labels[members] == 1] >= threshold) >= 0.90, name


def test_a_prediction_naming_a_collection_gets_its_threshold_and_any_other_the_global_one(
    tiny_artifacts: dict[str, bytes],
):
    card = {"serving_artifact": "model.onnx", "threshold": 0.3, "collection_thresholds": {"clinic": 0.2}}
    served = ServingModel.from_bytes("v1", tiny_artifacts["model.onnx"], card)
    assert served.threshold_for("clinic") == (0.2, "clinic")
    assert served.threshold_for("elsewhere") == (0.3, None) and served.threshold_for(None) == (0.3, None)
    assert served.label(0.25, 0.2) == "malignant" and served.label(0.25) == "benign"


def test_packaging_reports_every_collection_and_the_external_one_apart(tiny_model: keras.Model, dataset_root: Path):
    candidate = _package(tiny_model, dataset_root)
    card = candidate.card
    test = load_folder(dataset_root / "test")
    assert sorted(card["metrics"]["collections"]) == ["elsewhere", "ham"]
    elsewhere = card["metrics"]["collections"]["elsewhere"]
    assert elsewhere["external"] is True and elsewhere["n"] == len(test)
    assert elsewhere["threshold_collection"] is None and elsewhere["threshold"] == card["threshold"]
    assert card["metrics"]["external"]["n"] == len(test) and card["data"]["external"]["name"] == "elsewhere"
    assert card["data"]["collections"]["elsewhere"]["train"] is None
    assert card["data"]["collections"]["ham"]["test"]["n"] == len(test)
