"""Turn a trained model into a publishable version: operating point, calibration, the test
evaluation, the parity-checked serving artifact and the card that describes them all."""

from __future__ import annotations

import json
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras
import numpy as np

from shared.model.data import LabelledImages
from shared.model.evaluation import choose_threshold, fit_platt, metrics
from shared.model.export import PARITY_TOLERANCE, check_parity, export_artifact
from shared.model.registry import CARD_FILE, KERAS_FILE
from shared.model.serving import ServingModel, artifact_for_runtime, calibrate

NOTE = (
    "Research and teaching tool, not for clinical use: it does not diagnose. Trained on dermoscopic "
    "images only (HAM10000, mostly fair skin); other image types and skin tones are out of scope."
)
# Keys of a metrics dict that are plot data, left out of one-line summaries.
_PLOT_KEYS = ("roc_curve", "reliability")


@dataclass(frozen=True)
class OperatingPoint:
    threshold: float
    calibration: dict[str, Any]
    rule: dict[str, Any]  # how the threshold was chosen, for the card


def operating_point(
    labels: np.ndarray,
    raw: np.ndarray,
    target_sensitivity: float,
    *,
    external: tuple[np.ndarray, np.ndarray] | None = None,
    external_target_sensitivity: float | None = None,
) -> OperatingPoint:
    """Platt calibration fitted on validation, then the threshold on calibrated scores.

    A threshold chosen on HAM10000 validation alone does not travel: on other clinics'
    images the same score means less, and the promised sensitivity falls (0.77 on Derm7pt
    for the 0.90 chosen in-domain). With `external` (labels, raw scores of another
    collection) the threshold is the lower of the two that reach each target with a margin,
    so both hold; the specificity this costs shows in the metrics.
    """
    calibration = fit_platt(labels, raw)
    in_domain = choose_threshold(labels, calibrate(raw, calibration), target_sensitivity)
    rule: dict[str, Any] = {"validation_target": target_sensitivity, "validation_threshold": in_domain}
    threshold = in_domain
    if external is not None and external_target_sensitivity is not None:
        external_labels, external_raw = external
        travelling = choose_threshold(
            external_labels, calibrate(external_raw, calibration), external_target_sensitivity
        )
        rule |= {"external_target": external_target_sensitivity, "external_threshold": travelling}
        threshold = min(in_domain, travelling)
    rule["chosen_by"] = "validation" if threshold == in_domain else "external"
    return OperatingPoint(threshold, calibration, rule)


def summary(result: dict[str, Any]) -> dict[str, Any]:
    """A metrics dict without its plot data: what fits on one line of output."""
    return {key: value for key, value in result.items() if key not in _PLOT_KEYS}


def keras_bytes(model: keras.Model) -> bytes:
    """The `.keras` file of `model`, without optimizer state (the model is never compiled)."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / KERAS_FILE
        model.save(path)
        return path.read_bytes()


def export_checked(model: keras.Model, pixels: np.ndarray, artifact_name: str) -> tuple[bytes, float]:
    """Export the serving artifact `artifact_name` and prove parity on `pixels` in the
    runtime that serves it (raises ParityError)."""
    artifact = export_artifact(model, artifact_name)
    return artifact, check_parity(model, artifact, pixels, artifact_name=artifact_name)


def parity_record(runtime: str, worst: float, images: int) -> dict[str, Any]:
    """The card's account of the parity check: which artifact, how far from Keras, on what."""
    return {
        "runtime": runtime,
        "artifact": artifact_for_runtime(runtime),
        "max_abs_diff": worst,
        "images": images,
        "tolerance": PARITY_TOLERANCE,
    }


def evaluate_artifact(
    artifact: bytes, card: dict[str, Any], data: LabelledImages, *, batch_size: int = 32, bootstrap_rounds: int = 2000
) -> dict[str, Any]:
    """Metrics of the serving artifact on `data`: calibrated scores at the card's threshold."""
    served = ServingModel.from_bytes(card.get("version", "candidate"), artifact, card)
    scores = _in_batches(served.predict, data.pixels, batch_size)
    return metrics(data.labels, scores, served.threshold, bootstrap_rounds=bootstrap_rounds)


def describe(data: LabelledImages, source: str) -> dict[str, Any]:
    return {"source": source, "n": len(data), "n_malignant": int(data.labels.sum()), "content_hash": data.content_hash}


def write_version(folder: Path, files: dict[str, bytes], card: dict[str, Any]) -> None:
    """Write the files, then the card last (like `registry.publish_version`)."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        (folder / name).write_bytes(data)
    (folder / CARD_FILE).write_text(json.dumps(card, indent=2, sort_keys=True) + "\n")


def make_card(
    version: str,
    *,
    point: OperatingPoint,
    config: dict[str, Any],
    data: dict[str, Any],
    validation: dict[str, Any],
    test: dict[str, Any] | None,
    external: dict[str, Any] | None = None,
    history: list[dict[str, Any]],
    seconds: dict[str, float],
    parity: dict[str, Any],
    serving_artifact: str,
    parent: str | None = None,
) -> dict[str, Any]:
    return {
        "version": version,
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "parent_version": parent,
        "architecture": "MobileNetV2 + global average pooling + dropout + sigmoid, 224x224 RGB 0..255 input",
        "serving_artifact": serving_artifact,
        "threshold": point.threshold,
        "threshold_rule": point.rule,
        "calibration": point.calibration,
        "target_sensitivity": config.get("target_sensitivity"),
        "metrics": {"validation": validation, "test": test, "external": external},
        "data": data,
        "training": {"config": config, "history": history, "seconds": seconds},
        "parity": parity,
        "note": NOTE,
    }


@dataclass(frozen=True)
class Candidate:
    """A trained model made publishable: its serving artifact and card, and the metrics."""

    artifact: bytes
    card: dict[str, Any]
    validation: dict[str, Any]
    test: dict[str, Any] | None
    external: dict[str, Any] | None = None

    @property
    def artifact_name(self) -> str:
        """The file name the artifact is stored under, as the card names it."""
        return self.card["serving_artifact"]


def package(
    version: str,
    result: Any,
    config: Any,
    splits: tuple[LabelledImages, LabelledImages, LabelledImages | None],
    *,
    train_source: str,
    test_source: str | None = None,
    external: LabelledImages | None = None,
    external_source: str | None = None,
    external_name: str = "external collection",
    parent: str | None = None,
    runtime: str = "onnxruntime",
) -> Candidate:
    """Operating point and calibration on validation, the parity-checked artifact, both
    splits evaluated through it, and the card: what `train` and the trainer service share.

    `result` is a `TrainingResult`, `config` its `TrainingConfig`; `splits` is (train,
    validation, test or None). `runtime` (a SERVING_RUNTIME value) picks the artifact; the
    parity check runs in that runtime on test, or on validation without it. `external`, another
    clinic's collection never trained on, is evaluated too and moves the threshold so that
    its sensitivity target holds there as well (`operating_point`).
    """
    train_data, validation, test = splits
    artifact_name = artifact_for_runtime(runtime)
    parity_data = test if test is not None else validation
    artifact, worst = export_checked(result.model, parity_data.pixels, artifact_name)
    external_scores = None
    if external is not None:
        uncalibrated = ServingModel.from_bytes(version, artifact, {"serving_artifact": artifact_name, "threshold": 0.5})
        external_scores = (external.labels, _in_batches(uncalibrated.predict_raw, external.pixels))
    point = operating_point(
        validation.labels,
        result.validation_probabilities,
        config.target_sensitivity,
        external=external_scores,
        external_target_sensitivity=getattr(config, "external_target_sensitivity", None),
    )
    provisional = {
        "version": version,
        "threshold": point.threshold,
        "calibration": point.calibration,
        "serving_artifact": artifact_name,
    }
    validation_metrics = evaluate_artifact(artifact, provisional, validation)
    test_metrics = evaluate_artifact(artifact, provisional, test) if test is not None else None
    external_metrics = None
    if external_scores is not None:
        # The artifact's raw scores on the external collection are already in hand.
        labels, raw = external_scores
        external_metrics = metrics(labels, calibrate(raw, point.calibration), point.threshold)
    data = {
        "train": describe(train_data, train_source),
        "validation": describe(validation, f"{train_source} (held out, seed {config.seed})"),
    }
    if test is not None:
        data["test"] = describe(test, test_source or "test")
    if external is not None:
        data["external"] = {**describe(external, external_source or "external"), "name": external_name}
    card = make_card(
        version,
        point=point,
        config=config.as_dict(),
        data=data,
        validation=validation_metrics,
        test=test_metrics,
        external=external_metrics,
        history=result.history,
        seconds=result.seconds,
        parity=parity_record(runtime, worst, len(parity_data)),
        parent=parent,
        serving_artifact=artifact_name,
    )
    return Candidate(artifact, card, validation_metrics, test_metrics, external_metrics)


def _in_batches(predict: Any, pixels: np.ndarray, batch_size: int = 32) -> np.ndarray:
    return np.concatenate([predict(pixels[i : i + batch_size]) for i in range(0, len(pixels), batch_size)])
