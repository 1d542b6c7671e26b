"""Turn a trained model into a publishable version: operating point, calibration, the test
evaluation, the parity-checked serving artifact and the card that describes them all."""

from __future__ import annotations

import json
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import keras
import numpy as np

from shared.model.data import CollectionImages, LabelledImages, Photographs, combined_content_hash, concatenate
from shared.model.evaluation import choose_threshold, fit_platt, metrics
from shared.model.export import PARITY_TOLERANCE, block_statistic_widths, check_parity, export_artifact, serving_graph
from shared.serving import domain as domains
from shared.serving.registry import CARD_FILE, KERAS_FILE, sha256_of
from shared.serving.runtime import ServingModel, artifact_for_runtime, calibrate

NOTE = (
    "Research and teaching tool, not for clinical use: it does not diagnose. Trained on dermoscopic "
    "images only (the collections this card lists, mostly fair skin); other image types and skin tones"
    " are out of scope."
)
# Keys of a metrics dict that are plot data, left out of one-line summaries.
_PLOT_KEYS = ("roc_curve", "reliability")


# A collection gets its own threshold, and is judged by the gate, with this many malignant cases.
MIN_MALIGNANT_CASES = 30
# Training images the domain statistics are fitted on (a random sample: the fit needs no more).
DOMAIN_FIT_IMAGES = 2000


@dataclass(frozen=True)
class OperatingPoint:
    threshold: float
    calibration: dict[str, Any]
    rule: dict[str, Any]  # how the threshold was chosen, for the card
    collection_thresholds: dict[str, float] = field(default_factory=dict)


def operating_point(
    labels: np.ndarray,
    raw: np.ndarray,
    target_sensitivity: float,
    *,
    sensitivity_floor: float | None = None,
    collections: dict[str, np.ndarray] | None = None,
) -> OperatingPoint:
    """Platt calibration fitted on validation, then the thresholds on calibrated scores.

    The global threshold, for images of any clinic, is chosen on the pooled validation
    images: sensitivity reaches the target there, and its lower bound the floor
    (`evaluation.choose_threshold`). Each collection with at least MIN_MALIGNANT_CASES
    malignant validation images also gets a threshold chosen the same way on its own
    validation images; a prediction that names the collection is judged by it, since one
    score means different things at different clinics. Held-out parts and external
    collections choose nothing, so their sensitivity at these thresholds is honest.
    """
    calibration = fit_platt(labels, raw)
    calibrated = calibrate(raw, calibration)

    def chosen(members: np.ndarray) -> float:
        return choose_threshold(labels[members], calibrated[members], target_sensitivity, floor=sensitivity_floor)

    threshold = chosen(np.arange(len(labels)))
    own = {
        name: chosen(members)
        for name, members in (collections or {}).items()
        if name and labels[members].sum() >= MIN_MALIGNANT_CASES
    }
    rule: dict[str, Any] = {
        "validation_target": target_sensitivity,
        "sensitivity_floor": sensitivity_floor,
        "validation_threshold": threshold,
        "collection_thresholds": own,
        "min_malignant_cases": MIN_MALIGNANT_CASES,
        "chosen_by": "validation",
    }
    return OperatingPoint(threshold, calibration, rule, own)


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
    """Export the serving artifact `artifact_name` (the classifier with its trust outputs,
    `export.serving_graph`) and prove its probability's parity with the classifier on
    `pixels` in the runtime that serves it (raises ParityError)."""
    artifact = export_artifact(serving_graph(model), artifact_name)
    return artifact, check_parity(model, artifact, pixels, artifact_name=artifact_name)


def with_domain(served: ServingModel, fitted: domains.FittedDomain) -> ServingModel:
    """`served` judging with the statistics just fitted: the runtime already loaded, not a second one."""
    return replace(served, domain=domains.DomainModel.from_bytes(fitted.file))


def metrics_on(served: ServingModel, data: LabelledImages, threshold: float) -> dict[str, Any]:
    """The artifact's metrics on `data` at `threshold`, run a batch at a time."""
    return metrics(data.labels, _in_batches(served.predict, data.pixels), threshold)


def block_statistics(served: ServingModel, pixels: np.ndarray, batch_size: int = 32) -> np.ndarray:
    """The artifact's block statistics for `pixels` (N, features)."""
    return np.concatenate(
        [served.run(pixels[start : start + batch_size]).block_statistics for start in range(0, len(pixels), batch_size)]
    )


def fit_domain(
    model: keras.Model,
    served: ServingModel,
    train_data: LabelledImages,
    validation: LabelledImages,
    photographs: Photographs | None,
    *,
    seed: int = 1337,
) -> domains.FittedDomain:
    """Fit the version's domain statistics from its own artifact's outputs: a sample of the
    training images, every validation image, and the clinical photographs if any."""
    sample = np.random.default_rng(seed).permutation(len(train_data))[:DOMAIN_FIT_IMAGES]
    return domains.fit(
        block_statistics(served, train_data.pixels[np.sort(sample)]),
        block_statistics(served, validation.pixels),
        block_statistics(served, photographs.pixels) if photographs is not None else None,
        widths=block_statistic_widths(model),
        photographs_source=photographs.source if photographs is not None else "",
        seed=seed,
    )


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


def describe_parts(parts: list[LabelledImages], source: str) -> dict[str, Any]:
    """`describe(concatenate(parts))`, without copying their pixels."""
    return {
        "source": source,
        "n": sum(len(part) for part in parts),
        "n_malignant": sum(int(part.labels.sum()) for part in parts),
        "content_hash": combined_content_hash(parts),
    }


def write_version(folder: Path, files: dict[str, bytes], card: dict[str, Any]) -> None:
    """Write the files, then the card last with the SHA-256 of each of them and of the Keras
    file already there (like `registry.publish_version`)."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        (folder / name).write_bytes(data)
    recorded = {*files, *([KERAS_FILE] if (folder / KERAS_FILE).is_file() else [])}
    hashes = {name: sha256_of((folder / name).read_bytes()) for name in sorted(recorded)}
    (folder / CARD_FILE).write_text(json.dumps({**card, "artifacts": hashes}, indent=2, sort_keys=True) + "\n")


def make_card(
    version: str,
    *,
    point: OperatingPoint,
    config: dict[str, Any],
    data: dict[str, Any],
    metrics_by_split: dict[str, Any],
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
        "collection_thresholds": point.collection_thresholds,
        "threshold_rule": point.rule,
        "calibration": point.calibration,
        "target_sensitivity": config.get("target_sensitivity"),
        "metrics": metrics_by_split,
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
    held_out: dict[str, Any]  # evaluate_collections' result
    domain_file: bytes  # the fitted domain statistics (shared/serving/domain.py)

    @property
    def artifact_name(self) -> str:
        """The file name the artifact is stored under, as the card names it."""
        return self.card["serving_artifact"]

    @property
    def files(self) -> dict[str, bytes]:
        """Every file of the version but the card (and the Keras model, which the caller has)."""
        return {self.artifact_name: self.artifact, domains.DOMAIN_FILE: self.domain_file}

    @property
    def test(self) -> dict[str, Any] | None:
        return self.held_out.get("test")


def evaluate_collections(served: ServingModel, collections: list[CollectionImages]) -> dict[str, Any]:
    """A model's metrics on every collection's held-out part, through its serving artifact.

    `collections`: each at the threshold a prediction naming it gets (its own, or the global
    one). `test`: the trained-on collections' held-out parts pooled, and `external`: the
    external collections pooled, both at the global threshold (what an unnamed clinic gets);
    None when there are none.
    """
    held_out = [collection for collection in collections if collection.test is not None]
    outputs = {c.name: _scores_and_domain(served, c.test.pixels) for c in held_out}
    scores = {name: probabilities for name, (probabilities, _) in outputs.items()}
    per_collection = {}
    for collection in held_out:
        threshold, own = served.threshold_for(collection.name)
        per_collection[collection.name] = {
            **metrics(collection.test.labels, scores[collection.name], threshold),
            "external": collection.external,
            "threshold_collection": own,
            "domain": outputs[collection.name][1],
        }
    result: dict[str, Any] = {"collections": per_collection}
    for name, external in (("test", False), ("external", True)):
        chosen = [c for c in held_out if c.external == external]
        if chosen:
            labels = np.concatenate([c.test.labels for c in chosen])
            result[name] = metrics(labels, np.concatenate([scores[c.name] for c in chosen]), served.threshold)
        else:
            result[name] = None
    return result


def _scores_and_domain(
    served: ServingModel, pixels: np.ndarray, batch_size: int = 32
) -> tuple[np.ndarray, dict[str, Any] | None]:
    """Calibrated probabilities, and the shares of images each domain warning flags (None
    for a version without domain statistics)."""
    probabilities, judgements = [], []
    for start in range(0, len(pixels), batch_size):
        outputs = served.run(pixels[start : start + batch_size])
        probabilities.append(calibrate(outputs.raw, served.calibration))
        if served.domain is not None and outputs.block_statistics is not None:
            judgements += served.domain.judge(outputs.block_statistics)
    if not judgements:
        return np.concatenate(probabilities), None
    return np.concatenate(probabilities), domains.flagged_shares(judgements)


def describe_collections(
    train_data: LabelledImages, validation: LabelledImages, collections: list[CollectionImages]
) -> dict[str, Any]:
    """Each collection's images: trained on, validated on, held out."""
    trained, validated = train_data.collection_indices(), validation.collection_indices()

    def part(images: LabelledImages, members: np.ndarray | None, name: str) -> dict[str, Any] | None:
        if members is None or not len(members):
            return None
        n_malignant = int(images.labels[members].sum())
        return {
            "source": name,
            "n": len(members),
            "n_malignant": n_malignant,
            "content_hash": images.content_hash_of(members),
        }

    return {
        c.name: {
            "external": c.external,
            "train": part(train_data, trained.get(c.name), c.name),
            "validation": part(validation, validated.get(c.name), c.name),
            "test": describe(c.test, c.name) if c.test is not None else None,
        }
        for c in collections
    }


def package(
    version: str,
    result: Any,
    config: Any,
    train_data: LabelledImages,
    validation: LabelledImages,
    collections: list[CollectionImages],
    *,
    source: str,
    parent: str | None = None,
    runtime: str = "onnxruntime",
    photographs: Photographs | None = None,
) -> Candidate:
    """Operating points and calibration on validation, the parity-checked artifact, every
    collection's held-out part evaluated through it, and the card: what `train` and the
    trainer service share.

    `result` is a `TrainingResult`, `config` its `TrainingConfig`; `collections` every
    collection (their held-out parts are evaluated; external ones are held out whole).
    `runtime` (a SERVING_RUNTIME value) picks the artifact; the parity check runs in that
    runtime on the held-out images, or on validation when there are none. The domain
    statistics are fitted on the artifact's own outputs (`fit_domain`); `photographs`, when
    given, train the `not_dermoscopy` detector.
    """
    artifact_name = artifact_for_runtime(runtime)
    held_out = [c.test for c in collections if c.test is not None]
    parity_data = concatenate(held_out) if held_out else validation
    artifact, worst = export_checked(result.model, parity_data.pixels, artifact_name)
    point = operating_point(
        validation.labels,
        result.validation_probabilities,
        config.target_sensitivity,
        sensitivity_floor=config.sensitivity_floor,
        collections=validation.collection_indices(),
    )
    provisional = {
        "threshold": point.threshold,
        "collection_thresholds": point.collection_thresholds,
        "calibration": point.calibration,
        "serving_artifact": artifact_name,
    }
    plain = ServingModel.from_bytes(version, artifact, provisional)
    fitted = fit_domain(result.model, plain, train_data, validation, photographs)
    served = with_domain(plain, fitted)
    validation_metrics = metrics_on(served, validation, point.threshold)
    evaluated = evaluate_collections(served, collections)
    external = [c for c in collections if c.external and c.test is not None]
    data: dict[str, Any] = {
        "train": describe(train_data, f"{source}: the collections' training parts"),
        "validation": describe(validation, f"{source}: drawn from the training parts by patient or image hash"),
        "collections": describe_collections(train_data, validation, collections),
    }
    trained_on_held_out = [c.test for c in collections if c.test is not None and not c.external]
    if trained_on_held_out:
        data["test"] = describe_parts(trained_on_held_out, source)
    if external:
        data["external"] = {
            **describe_parts([c.test for c in external], source),
            "name": ", ".join(c.name for c in external),
        }
    card = make_card(
        version,
        point=point,
        config=config.as_dict(),
        data=data,
        metrics_by_split={"validation": validation_metrics, **evaluated},
        history=result.history,
        seconds=result.seconds,
        parity=parity_record(runtime, worst, len(parity_data)),
        parent=parent,
        serving_artifact=artifact_name,
    )
    card["domain"] = fitted.card
    return Candidate(artifact, card, validation_metrics, evaluated, fitted.file)


def _in_batches(predict: Any, pixels: np.ndarray, batch_size: int = 32) -> np.ndarray:
    return np.concatenate([predict(pixels[i : i + batch_size]) for i in range(0, len(pixels), batch_size)])
