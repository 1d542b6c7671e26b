"""One retraining run: data from the store, training, evaluation, the gate, publishing.

The version is named after the job, so a run repeated after a crash rewrites the same
version instead of adding a second one; the card is written last, so a half-written
version is never visible.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from services.trainer.gate import decide
from shared.model import registry
from shared.settings import Settings
from shared.storage import ObjectStore

log = logging.getLogger(__name__)

# (stage, epoch, epochs, metrics) -> None; called as the run moves on.
ProgressCallback = Callable[[str, int, int, dict[str, Any]], None]
EventCallback = Callable[[str, dict[str, Any]], None]


def training_config(settings: Settings, epochs: int | None) -> Any:
    from shared.model.training import TrainingConfig

    overrides: dict[str, Any] = {}
    if epochs is not None:
        overrides["finetune_epochs"] = epochs
    if settings.training_profile == "quick":
        return TrainingConfig.quick(**overrides)
    return TrainingConfig(weights=settings.pretrained_weights, **overrides)


def load_training_data(store: ObjectStore) -> tuple[Any, Any]:
    """(train + incoming, test) from the store; `incoming` may be empty."""
    from shared.model.data import concatenate, load_store

    parts = [load_store(store, "train")]
    try:
        parts.append(load_store(store, "incoming"))
    except FileNotFoundError:
        log.info("no incoming images; training on the train split alone")
    return concatenate(parts), load_store(store, "test")


def run_training(
    settings: Settings,
    store: ObjectStore,
    job_id: str,
    epochs: int | None,
    *,
    on_progress: ProgressCallback,
    on_event: EventCallback,
) -> dict[str, Any]:
    """Train, evaluate candidate and production on the test split, gate, publish.

    Returns the fields the job record takes: status, candidate_version, gate.
    """
    from shared.model import card as cards
    from shared.model.data import stratified_split
    from shared.model.training import train

    started = time.monotonic()
    config = training_config(settings, epochs)
    everything, test = load_training_data(store)
    train_index, validation_index = stratified_split(everything.labels, config.validation_fraction, config.seed)
    train_data, validation = everything.subset(train_index), everything.subset(validation_index)
    parent = registry.production_version(store)
    on_progress("training", 0, config.head_epochs + config.finetune_epochs, {})
    result = train(
        config,
        train_data,
        validation,
        on_epoch=lambda epoch, total, record: on_progress("training", epoch, total, record),
    )

    on_progress("evaluating", 0, 0, {})
    version = job_id
    point = cards.operating_point(validation.labels, result.validation_probabilities, config.target_sensitivity)
    artifact, worst = cards.export_checked(result.model, test.pixels)
    provisional = {"version": version, "threshold": point.threshold, "calibration": point.calibration}
    validation_metrics = cards.evaluate_artifact(artifact, provisional, validation)
    candidate_metrics = cards.evaluate_artifact(artifact, provisional, test)
    production_metrics = _production_metrics(store, parent, test)
    gate = decide(
        candidate_metrics,
        production_metrics,
        production_version=parent,
        auc_tolerance=settings.gate_auc_tolerance,
        sensitivity_tolerance=settings.gate_sensitivity_tolerance,
    )
    data = {
        "train": cards.describe(train_data, "store:datasets/train+incoming"),
        "validation": cards.describe(validation, f"store:datasets/train+incoming (held out, seed {config.seed})"),
        "test": cards.describe(test, "store:datasets/test"),
    }
    card = cards.make_card(
        version,
        point=point,
        config=config.as_dict(),
        data=data,
        validation=validation_metrics,
        test=candidate_metrics,
        history=result.history,
        seconds={**result.seconds, "job": time.monotonic() - started},
        parity={"max_abs_diff": worst, "images": len(test), "tolerance": 1e-4},
        parent=parent,
    )
    card["gate"] = gate
    card["training_job"] = job_id
    registry.publish_version(
        store, version, {"model.keras": cards.keras_bytes(result.model), "model.onnx": artifact}, card
    )
    on_event("model.published", {"version": version, "gate_passed": gate["passed"]})
    if gate["passed"]:
        registry.promote(store, version, reason=f"training job {job_id} passed the gate")
        on_event("model.promoted", {"version": version, "previous": parent})
    return {"status": "promoted" if gate["passed"] else "rejected", "candidate_version": version, "gate": gate}


def _production_metrics(store: ObjectStore, version: str | None, test: Any) -> dict[str, Any] | None:
    """Production's metrics on this very test split, through its serving artifact."""
    if version is None:
        return None
    from shared.model import card as cards

    card = registry.read_card(store, version)
    artifact = store.get(f"models/versions/{version}/{card.get('serving_artifact', 'model.onnx')}")
    return cards.evaluate_artifact(artifact, card, test)


def quiet_numbers(record: dict[str, Any]) -> dict[str, Any]:
    """Epoch metrics as plain floats (numpy scalars do not serialise to JSON)."""
    return {key: float(value) if isinstance(value, np.floating | float) else value for key, value in record.items()}
