"""The training command end to end in quick mode, and the evaluate command on its output."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from services.trainer.__main__ import build_parser, main
from shared.model.data import load_folder
from shared.serving.runtime import ServingModel

SUMMARY_KEYS = {"n", "auc", "sensitivity", "specificity", "balanced_accuracy", "threshold"}


@pytest.fixture(scope="module")
def trained(dataset_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("models")
    arguments = ["train", "--data", str(dataset_root), "--quick", "--out", str(out), "--promote"]
    assert main([*arguments, "--external", f"other-clinic={dataset_root / 'test'}"]) == 0
    return out


def _last_json_line(text: str) -> dict:
    return json.loads(text.strip().splitlines()[-1])


def test_quick_training_writes_a_complete_version_with_card_and_report(trained: Path, dataset_root: Path):
    version = json.loads((trained / "aliases" / "production.json").read_text())["version"]
    folder = trained / "versions" / version
    names = {path.name for path in folder.iterdir()}
    assert {
        "model.keras",
        "model.tflite",
        "card.json",
        "report.md",
        "roc.png",
        "confusion.png",
        "calibration.png",
        "domain.npz",
    } <= names
    card = json.loads((folder / "card.json").read_text())
    assert card["version"] == version and card["serving_artifact"] == "model.tflite"
    assert card["calibration"]["method"] == "platt" and 0.0 <= card["threshold"] <= 1.0
    assert card["parity"]["runtime"] == "litert" and card["parity"]["max_abs_diff"] <= 1e-4
    assert card["metrics"]["test"]["n"] == 12 and card["data"]["test"]["n"] == 12
    assert "not for clinical use" in card["note"]
    assert card["metrics"]["external"]["n"] == 12 and card["data"]["external"]["name"] == "other-clinic"
    assert sorted(card["metrics"]["collections"]) == [dataset_root.name, "other-clinic"]
    # No clinical photographs configured: only the distance rule raises not_dermoscopy.
    assert card["domain"]["file"] == "domain.npz" and card["domain"]["not_dermoscopy"]["detector"] is None
    assert card["metrics"]["collections"]["other-clinic"]["domain"]["n"] == 12


def test_the_external_collection_is_scored_every_epoch_but_chooses_nothing(trained: Path):
    version = json.loads((trained / "aliases" / "production.json").read_text())["version"]
    history = json.loads((trained / "versions" / version / "card.json").read_text())["training"]["history"]
    epochs = [record for record in history if "epoch" in record]
    assert epochs and all(0.0 <= record["external_auc"] <= 1.0 for record in epochs)
    tried = [record for record in history if record["phase"] == "probe_mix"]
    assert all("external_auc" in record for record in tried)
    kept = history[-1]
    assert kept["val_auc"] == max(record["val_auc"] for record in tried), "validation alone picks the mix"


def test_training_keeps_the_probe_mix_that_validation_prefers(trained: Path):
    version = json.loads((trained / "aliases" / "production.json").read_text())["version"]
    card = json.loads((trained / "versions" / version / "card.json").read_text())
    history = card["training"]["history"]
    tried = [(record["share"], record["val_auc"]) for record in history if record["phase"] == "probe_mix"]
    assert [share for share, _ in tried] == [0.0, *card["training"]["config"]["probe_mix"]]
    kept = history[-1]
    assert kept["phase"] == "selected_mix" and kept["val_auc"] == max(auc for _, auc in tried)
    assert kept["share"] == min(share for share, auc in tried if auc == kept["val_auc"])


def test_the_trained_version_answers_in_the_serving_runtime(trained: Path, dataset_root: Path):
    version = json.loads((trained / "aliases" / "production.json").read_text())["version"]
    folder = trained / "versions" / version
    served = ServingModel.from_bytes(
        version, (folder / "model.tflite").read_bytes(), json.loads((folder / "card.json").read_text())
    )
    probabilities = served.predict(load_folder(dataset_root / "test").pixels[:3])
    assert probabilities.shape == (3,) and np.all((probabilities >= 0) & (probabilities <= 1))


def test_evaluate_prints_one_json_summary_as_its_last_line(trained: Path, dataset_root: Path, capsys, tmp_path):
    version = json.loads((trained / "aliases" / "production.json").read_text())["version"]
    model_dir = trained / "versions" / version
    code = main(
        ["evaluate", "--data", str(dataset_root / "test"), "--model-dir", str(model_dir), "--report", str(tmp_path)]
    )
    summary = _last_json_line(capsys.readouterr().out)
    assert code == 0 and summary.keys() >= SUMMARY_KEYS and summary["n"] == 12
    assert (tmp_path / "report.md").is_file()


def test_evaluate_judges_at_a_named_collections_own_threshold(trained: Path, dataset_root: Path, capsys, tmp_path):
    version = json.loads((trained / "aliases" / "production.json").read_text())["version"]
    model_dir = shutil.copytree(trained / "versions" / version, tmp_path / version)
    card = json.loads((model_dir / "card.json").read_text())
    (model_dir / "card.json").write_text(json.dumps({**card, "collection_thresholds": {"clinic": 0.0}}))
    arguments = ["evaluate", "--data", str(dataset_root / "test"), "--model-dir", str(model_dir)]

    assert main([*arguments, "--collection", "clinic"]) == 0
    own = _last_json_line(capsys.readouterr().out)
    assert (own["threshold"], own["threshold_collection"], own["sensitivity"]) == (0.0, "clinic", 1.0)
    assert main([*arguments, "--collection", "elsewhere"]) == 0
    other = _last_json_line(capsys.readouterr().out)
    assert (other["threshold"], other["threshold_collection"]) == (card["threshold"], None)


def test_train_takes_a_serving_runtime_and_refuses_unknown_ones():
    assert build_parser().parse_args(["train", "--runtime", "litert"]).runtime == "litert"
    assert build_parser().parse_args(["train"]).runtime is None  # then the SERVING_RUNTIME setting decides
    with pytest.raises(SystemExit):
        build_parser().parse_args(["train", "--runtime", "tensorrt"])


def test_export_makes_a_new_version_for_another_runtime_with_parity_and_the_same_metrics(
    trained: Path, dataset_root: Path, capsys, tmp_path: Path
):
    version = json.loads((trained / "aliases" / "production.json").read_text())["version"]
    folder = trained / "versions" / version
    before = json.loads((folder / "card.json").read_text())
    arguments = ["--model-dir", str(folder), "--runtime", "onnxruntime", "--data", str(dataset_root)]
    code = main(["export", *arguments, "--out", str(tmp_path)])
    exported = _last_json_line(capsys.readouterr().out)
    assert code == 0 and exported["artifact"] == "model.onnx" and exported["exported_from"] == version
    assert json.loads((folder / "card.json").read_text()) == before, "the version exported from never changes"
    new_folder = tmp_path / "versions" / exported["version"]
    card = json.loads((new_folder / "card.json").read_text())
    assert card["serving_artifact"] == "model.onnx" and card["parity"]["runtime"] == "onnxruntime"
    assert card["parity"]["max_abs_diff"] <= 1e-4 and card["parity"]["images"] == 12
    assert card["threshold"] == before["threshold"] and card["calibration"] == before["calibration"]
    assert card["metrics"] == before["metrics"], "parity holds every figure to 1e-4: they carry over"
    assert set(card["artifacts"]) == {"model.keras", "model.onnx", "domain.npz"}
    served = ServingModel.from_bytes(card["version"], (new_folder / "model.onnx").read_bytes(), card)
    assert served.predict(load_folder(dataset_root / "test").pixels[:2]).shape == (2,)


def test_runs_that_differ_after_the_lower_backbone_share_its_cached_outputs(dataset_root: Path):
    from shared.model.data import split_validation
    from shared.model.training import TrainingConfig, train

    train_data, validation = split_validation(load_folder(dataset_root / "train"), 0.25)
    shared: dict = {}
    train(TrainingConfig.quick(), train_data, validation, shared_features=shared)
    (first,) = shared.values()
    train(TrainingConfig.quick(diagnosis_balance=0.0, probe_mix=()), train_data, validation, shared_features=shared)
    assert len(shared) == 1 and next(iter(shared.values())) is first, "a head-side change reuses the cache"
    assert first[0].shape[:2] == (1, len(train_data))
    train(TrainingConfig.quick(augmentation="colour"), train_data, validation, shared_features=shared)
    assert len(shared) == 2, "another augmentation makes its own"


def test_package_makes_a_new_version_of_a_trained_one_only_from_the_data_it_was_trained_on(
    trained: Path, dataset_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    from tests.model.conftest import write_images

    version = json.loads((trained / "aliases" / "production.json").read_text())["version"]
    write_images(tmp_path / "photos", 10, seed=9)
    out = tmp_path / "packaged"
    arguments = ["package", "--model-dir", str(trained / "versions" / version), "--out", str(out)]
    same_data = ["--data", str(dataset_root), "--external", f"other-clinic={dataset_root / 'test'}"]
    assert main([*arguments, *same_data, "--clinical-photos", str(tmp_path / "photos")]) == 0
    packaged = _last_json_line(capsys.readouterr().out)
    assert packaged["packaged_from"] == version and packaged["max_abs_diff"] <= 1e-4
    old = json.loads((trained / "versions" / version / "card.json").read_text())
    card = json.loads((out / "versions" / packaged["version"] / "card.json").read_text())
    assert card["threshold"] == old["threshold"] and card["calibration"] == old["calibration"]
    assert card["domain"]["not_dermoscopy"]["detector"]["photographs"] > 0
    assert (out / "versions" / packaged["version"] / "domain.npz").is_file()
    with pytest.raises(SystemExit, match="not the data"):
        main([*arguments, "--data", str(dataset_root)])  # the external collection is missing
