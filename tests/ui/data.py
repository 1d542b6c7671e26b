"""Hand-made model cards, insights snapshots and labelled images for the UI tests.

Cards are made as the trainer makes them since collections (`metrics.collections`,
`collection_thresholds`), unless `legacy=True` asks for one made before (as the cards shipped in
models/ are); `evaluation` gives the `card.evaluate_collections` shape the gate decides on.
"""

from __future__ import annotations

import io
import time
from typing import Any

import numpy as np
from PIL import Image

from shared import dataset, training_jobs
from shared.serving import registry
from shared.storage import ObjectStore, layout
from tests.support.onnx_models import brightness_model


def test_metrics(auc: float, sensitivity: float, specificity: float) -> dict[str, Any]:
    """Test-split metrics in the shape `shared.model.evaluation.metrics` returns."""
    fpr = [0.0, 0.05, 0.1, 0.2, 0.35, 0.5, 0.7, 1.0]
    tpr = [0.0, 0.45, 0.62, 0.78, 0.88, 0.93, 0.97, 1.0]
    return {
        "n": 200,
        "n_malignant": 50,
        "auc": auc,
        "auc_ci95": [round(auc - 0.04, 3), round(auc + 0.03, 3)],
        "threshold": 0.5,
        "sensitivity": sensitivity,
        "specificity": specificity,
        "balanced_accuracy": (sensitivity + specificity) / 2,
        "precision": 0.55,
        "f1": 0.67,
        "confusion_matrix": {"tp": 45, "fn": 5, "tn": 111, "fp": 39},
        "brier": 0.12,
        "ece": 0.045,
        "reliability": [
            {"mean_score": 0.05, "observed": 0.03, "count": 90},
            {"mean_score": 0.25, "observed": 0.2, "count": 40},
            {"mean_score": 0.5, "observed": 0.55, "count": 30},
            {"mean_score": 0.75, "observed": 0.7, "count": 25},
            {"mean_score": 0.93, "observed": 0.9, "count": 15},
        ],
        "roc_curve": {"fpr": fpr, "tpr": tpr, "thresholds": [None, 0.9, 0.8, 0.6, 0.45, 0.3, 0.2, 0.0]},
    }


def collection_metrics(
    auc: float,
    sensitivity: float,
    specificity: float,
    *,
    n: int,
    n_malignant: int,
    threshold: float = 0.5,
    own: bool = False,
    name: str | None = None,
    external: bool = False,
) -> dict[str, Any]:
    """One collection's held-out metrics as `card.evaluate_collections` gives them: at its own
    threshold (`own`, which needs its `name`) or the global one."""
    malignant_found = round(sensitivity * n_malignant)
    benign = n - n_malignant
    benign_cleared = round(specificity * benign)
    return {
        **test_metrics(auc, sensitivity, specificity),
        "n": n,
        "n_malignant": n_malignant,
        "confusion_matrix": {
            "tp": malignant_found,
            "fn": n_malignant - malignant_found,
            "tn": benign_cleared,
            "fp": benign - benign_cleared,
        },
        "threshold": threshold,
        "threshold_collection": name if own else None,
        "external": external,
    }


def evaluation(
    test: dict[str, Any] | None, collections: dict[str, Any], external: dict[str, Any] | None = None
) -> dict[str, Any]:
    """A model's evaluation on every collection's held-out part (`card.evaluate_collections`)."""
    return {"collections": collections, "test": test, "external": external}


def default_collections(
    auc: float, sensitivity: float, specificity: float, external: dict[str, Any] | None = None
) -> dict[str, Any]:
    """A card's collections: HAM10000 with its own threshold (0.42), a small clinic judged by the
    global threshold (0.5) and, given `external` (see `external_evaluation`), that collection."""
    collections = {
        "ham10000": collection_metrics(
            min(auc + 0.01, 0.99),
            sensitivity,
            specificity - 0.02,
            n=1500,
            n_malignant=300,
            threshold=0.42,
            own=True,
            name="ham10000",
        ),
        "clinic-north": collection_metrics(
            auc - 0.05, sensitivity - 0.08, specificity + 0.01, n=40, n_malignant=9, threshold=0.5
        ),
    }
    if external is not None:
        collections[external["data"]["name"].lower()] = {
            **external["metrics"],
            "threshold": 0.5,
            "threshold_collection": None,
            "external": True,
        }
    return collections


def publish_brightness_version(
    store: ObjectStore,
    version: str,
    *,
    auc: float,
    sensitivity: float,
    specificity: float,
    promote: bool = False,
    external: dict[str, Any] | None = None,
    collections: dict[str, Any] | None = None,
    collection_thresholds: dict[str, float] | None = None,
    legacy: bool = False,
) -> None:
    """A servable version (the brightness model) whose card carries test metrics, given
    `external` (see `external_evaluation`) metrics on an external collection and, unless
    `legacy`, each collection's metrics (`collections`, by default `default_collections`) and
    the collections' own thresholds (by default those the collections were judged at)."""
    card: dict[str, Any] = {
        "version": version,
        "created_at": "2025-01-02T03:04:05Z",
        "parent_version": None,
        "threshold": 0.5,
        "calibration": None,
        "serving_artifact": "model.onnx",
        "metrics": {"validation": None, "test": test_metrics(auc, sensitivity, specificity)},
    }
    if external is not None:
        card["metrics"]["external"] = external["metrics"]
        card["data"] = {"external": external["data"]}
    if not legacy:
        if collections is None:
            collections = default_collections(auc, sensitivity, specificity, external)
        if collection_thresholds is None:
            collection_thresholds = {
                name: metrics["threshold"] for name, metrics in collections.items() if metrics["threshold_collection"]
            }
        card["metrics"]["collections"] = collections
        card["collection_thresholds"] = collection_thresholds
    registry.publish_version(store, version, {"model.onnx": brightness_model()}, card)
    if promote:
        registry.promote(store, version, reason="set up by a UI test")


def external_evaluation(name: str, *, auc: float, sensitivity: float, specificity: float) -> dict[str, Any]:
    """`metrics` and `data` entries of a card evaluated on another clinic's collection `name`."""
    metrics = {
        **test_metrics(auc, sensitivity, specificity),
        "n": 1011,
        "n_malignant": 252,
        "confusion_matrix": {"tp": 200, "fn": 52, "tn": 455, "fp": 304},
        "ece": 0.081,
        "roc_curve": {
            "fpr": [0.0, 0.1, 0.25, 0.4, 0.6, 1.0],
            "tpr": [0.0, 0.35, 0.58, 0.75, 0.88, 1.0],
            "thresholds": [None, 0.9, 0.7, 0.5, 0.3, 0.0],
        },
    }
    data = {"source": f"/data/{name.lower()}", "n": 1011, "n_malignant": 252, "content_hash": "e" * 64, "name": name}
    return {"metrics": metrics, "data": data}


def save_running_job(store: ObjectStore, job_id: str, progress: dict[str, Any], *, status: str = "running") -> None:
    """A training job record as the trainer leaves it while it runs: `progress` is
    `{stage, epoch, epochs, metrics, eta_seconds, elapsed_seconds}`."""
    record = training_jobs.new_record(job_id, epochs=progress.get("epochs"))
    record.update(status=status, progress=progress)
    record["timings"]["started_at"] = time.time() - progress.get("elapsed_seconds", 0.0)
    training_jobs.save(store, record)


def save_finished_job(store: ObjectStore, job_id: str, candidate_version: str, gate: dict[str, Any]) -> None:
    """A training job record as the trainer leaves it once its gate has decided."""
    record = training_jobs.new_record(job_id, epochs=1)
    queued_at = record["timings"]["queued_at"]
    record.update(
        status="promoted" if gate["passed"] else "rejected",
        progress={"stage": "evaluating", "epoch": 1, "epochs": 1, "metrics": {"val_auc": 0.9, "loss": 0.31}},
        timings={"queued_at": queued_at, "started_at": queued_at + 1, "finished_at": queued_at + 95},
        candidate_version=candidate_version,
        gate=gate,
    )
    training_jobs.save(store, record)


def snapshot() -> dict[str, Any]:
    """An insights snapshot in the schema the insights service writes: counts per part pooled,
    and per collection."""
    ramp = np.linspace(0, 1, 32)
    dark = np.exp(-((ramp - 0.35) ** 2) / 0.02)
    bright = np.exp(-((ramp - 0.6) ** 2) / 0.03)

    def histogram(curve: np.ndarray) -> list[float]:
        return [round(float(v), 5) for v in curve / curve.sum()]

    per_class = {
        "benign": {
            channel: histogram(np.roll(dark, shift))
            for channel, shift in (("gray", 0), ("red", 3), ("green", -1), ("blue", -2))
        },
        "malignant": {
            channel: histogram(np.roll(bright, shift))
            for channel, shift in (("gray", 0), ("red", 2), ("green", -2), ("blue", -3))
        },
    }

    def parts(train: tuple[int, int], test: tuple[int, int]) -> dict[str, dict[str, int]]:
        return {
            "train": {"benign": train[0], "malignant": train[1]},
            "test": {"benign": test[0], "malignant": test[1]},
        }

    return {
        "computed_at": 1_735_787_045.0,
        "image_count": 1330,
        "duplicate_count": 3,
        "counts": parts((860, 220), (195, 55)),
        "collections": {
            "ham10000": {"external": False, "counts": parts((800, 200), (160, 40))},
            "clinic-north": {"external": False, "counts": parts((60, 20), (15, 5))},
            "derm7pt": {"external": True, "counts": parts((0, 0), (20, 10))},
        },
        "sizes": {
            "points": [[600, 450, 1200], [640, 480, 80], [1024, 768, 40], [300, 300, 10]],
            "width": {"edges": [0, 500, 1000, 1500], "counts": [10, 1280, 40]},
            "height": {"edges": [0, 500, 1000], "counts": [1290, 40]},
        },
        "intensity": {"bins": 32, **per_class},
        "brightness": {"benign": {"mean": 152.3, "std": 21.0}, "malignant": {"mean": 128.9, "std": 25.4}},
        "contrast": {"benign": {"mean": 38.1, "std": 9.2}, "malignant": {"mean": 45.7, "std": 11.0}},
        "work": {"computed": 1330, "cached": 0, "seconds": 12.5},
    }


def lesion_jpeg(value: int, seed: int, size: tuple[int, int] = (48, 48)) -> bytes:
    """A noisy image around grey level `value`: bright reads malignant, dark benign."""
    rng = np.random.default_rng(seed)
    pixels = np.clip(rng.normal(value, 12, (size[1], size[0], 3)), 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def seed_dataset(
    store: ObjectStore,
    per_class: int,
    *,
    max_bytes: int,
    max_pixels: int,
    collection: str = "ham10000",
    external: bool = False,
    holdout_fraction: float = 0.2,
) -> list[dataset.AddOutcome]:
    """`per_class` benign (dark) and malignant (bright) images in each part (train and test, the
    held-out one) of `collection`; an external collection gets them all in its held-out part."""
    target = dataset.open_collection(store, collection, external=external, holdout_fraction=holdout_fraction)
    known = dataset.known_hashes(store)
    outcomes: list[dataset.AddOutcome] = []
    for part_index, part in enumerate(layout.DATASET_PARTS):
        files = [
            dataset.LabelledFile(
                f"{label}-{index}.jpg",
                label,
                lesion_jpeg(value, seed=part_index * 10_000 + value * 100 + index + (50_000 if external else 0)),
            )
            for label, value in (("benign", 60), ("malignant", 190))
            for index in range(per_class)
        ]
        outcomes += dataset.add_images(
            store,
            target,
            files,
            part=dataset.TEST_PART if external else part,
            known=known,
            max_bytes=max_bytes,
            max_pixels=max_pixels,
        )
    return outcomes
