"""One retraining run: data from the store, training, evaluation, the gate, publishing.

Training reads `train` and `incoming` only; `test` and, when imported, `external` (another
collection) are where candidate and production are compared.

The version is named after the job, so a run repeated after a crash rewrites the same
version instead of adding a second one; the card is written last, so a half-written
version is never visible.
"""

from __future__ import annotations

import dataclasses
import logging
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from services.trainer.gate import decide
from shared.dataset import EXTERNAL_SPLIT
from shared.model import registry
from shared.model.serving import SERVING_ARTIFACT
from shared.settings import Settings
from shared.storage import ObjectStore, layout

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


def load_external_data(store: ObjectStore) -> Any | None:
    """The `external` split, or None when none was imported."""
    from shared.model.data import load_store

    try:
        return load_store(store, EXTERNAL_SPLIT)
    except FileNotFoundError:
        return None


def run_training(
    settings: Settings,
    store: ObjectStore,
    job_id: str,
    epochs: int | None,
    *,
    on_progress: ProgressCallback,
    on_event: EventCallback,
) -> dict[str, Any]:
    """Train, evaluate candidate and production on the test (and external) split, gate, publish.

    Returns the fields the job record takes: status, candidate_version, gate.
    """
    from shared.model import card as cards
    from shared.model.data import split_validation
    from shared.model.training import train

    started = time.monotonic()
    config = training_config(settings, epochs)
    everything, test = load_training_data(store)
    train_data, validation = split_validation(everything, config.validation_fraction, config.seed)
    parent = registry.production_version(store)
    initial_weights, initialised_from = production_weights(store, parent, config)
    if initial_weights is not None:
        config = dataclasses.replace(config, weights=None)  # the backbone comes from production
    on_progress("training", 0, config.head_epochs + config.finetune_epochs, {})
    result = train(
        config,
        train_data,
        validation,
        on_epoch=lambda epoch, total, record: on_progress("training", epoch, total, record),
        initial_weights=initial_weights,
    )

    on_progress("evaluating", 0, 0, {})
    # Loaded only now: training does not hold it in memory, and never sees it.
    external = load_external_data(store)
    version = job_id
    candidate = cards.package(
        version,
        result,
        config,
        (train_data, validation, test),
        train_source="store:datasets/train+incoming",
        test_source="store:datasets/test",
        external=external,
        external_source=f"store:datasets/{EXTERNAL_SPLIT}",
        # The store keeps no name for the collection; the folder it was imported from has one.
        external_name=settings.external_data_dir.name if settings.external_data_dir else "external collection",
        parent=parent,
        runtime=settings.serving_runtime,
    )
    production_test, production_external = _production_metrics(store, parent, test, external)
    gate = decide(
        candidate.test,
        production_test,
        production_version=parent,
        auc_tolerance=settings.gate_auc_tolerance,
        sensitivity_tolerance=settings.gate_sensitivity_tolerance,
        candidate_external=candidate.external,
        production_external=production_external,
    )
    card = candidate.card
    card["training"]["seconds"]["job"] = time.monotonic() - started
    card["gate"] = gate
    card["training"]["initialised_from"] = initialised_from
    card["training_job"] = job_id
    files = {registry.KERAS_FILE: cards.keras_bytes(result.model), candidate.artifact_name: candidate.artifact}
    registry.publish_version(store, version, files, card)
    on_event("model.published", {"version": version, "gate_passed": gate["passed"]})
    if gate["passed"]:
        registry.promote(store, version, reason=f"training job {job_id} passed the gate")
        on_event("model.promoted", {"version": version, "previous": parent})
    return {"status": "promoted" if gate["passed"] else "rejected", "candidate_version": version, "gate": gate}


def production_weights(store: ObjectStore, version: str | None, config: Any) -> tuple[list[Any] | None, str]:
    """Production's Keras weights to fine-tune from, when its architecture matches `config`.

    Returns (weights or None, where training starts from): a production version without a
    Keras file (e.g. a hand-made ONNX model) or of another width starts from `config.weights`.
    """
    pretrained = f"pretrained weights ({config.weights or 'random'})"
    if version is None:
        return None, pretrained
    key = layout.model_file(version, registry.KERAS_FILE)
    if not store.exists(key):
        return None, f"{pretrained}: production {version} has no Keras file"
    import keras

    from shared.model.architecture import build_model

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / registry.KERAS_FILE
        path.write_bytes(store.get(key))
        production = keras.models.load_model(path, compile=False)
    expected = build_model(
        None, alpha=config.alpha, dropout_rate=config.dropout_rate, colour_constancy=config.colour_constancy
    )
    # Same weight shapes are not enough: a weightless preprocessing layer (colour constancy)
    # changes what the weights mean, so the layer sequence must match as well.
    if _structure(production) != _structure(expected):
        return None, f"{pretrained}: production {version} has another architecture"
    return production.get_weights(), f"production {version}"


def _structure(model: Any) -> tuple[list[str], list[tuple[int, ...]]]:
    """A model's top-level layer types and weight shapes."""
    return [type(layer).__name__ for layer in model.layers], [tuple(w.shape) for w in model.get_weights()]


def _production_metrics(
    store: ObjectStore, version: str | None, test: Any, external: Any | None
) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """Production's metrics on this very test split and external split (None when absent),
    through its serving artifact."""
    if version is None:
        return None, None
    from shared.model import card as cards

    card = registry.read_card(store, version)
    artifact = store.get(layout.model_file(version, card.get("serving_artifact", SERVING_ARTIFACT)))
    external_metrics = cards.evaluate_artifact(artifact, card, external) if external is not None else None
    return cards.evaluate_artifact(artifact, card, test), external_metrics


def quiet_numbers(record: dict[str, Any]) -> dict[str, Any]:
    """Epoch metrics as plain floats (numpy scalars do not serialise to JSON)."""
    return {key: float(value) if isinstance(value, np.floating | float) else value for key, value in record.items()}
