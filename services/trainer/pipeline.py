"""One retraining run: data from the store, training, evaluation, the gate, publishing.

Training reads every trained-on collection's training part; validation is drawn from those
parts by patient or image hash. Each collection's held-out part, and every external
collection whole, is where candidate and production are compared.

The version is named after the job, so a run repeated after a crash finds its own version
instead of adding a second one: unpublished, it is trained again (the card is written last,
so a half-written version is never visible); published, it is never written again, and the
gate's decision stands (`finish_published`).
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
from services.trainer.progress import ProgressCallback, RunProgress
from shared import audit
from shared.errors import BadInput
from shared.serving import registry
from shared.serving.card import ModelCard
from shared.settings import Settings
from shared.storage import ObjectStore, layout

log = logging.getLogger(__name__)

EventCallback = Callable[[str, dict[str, Any]], None]


def training_config(settings: Settings, epochs: int | None) -> Any:
    from shared.model.training import TrainingConfig

    overrides: dict[str, Any] = {}
    if epochs is not None:
        overrides["finetune_epochs"] = epochs
    if settings.training_profile == "quick":
        return TrainingConfig.quick(**overrides)
    return TrainingConfig(weights=settings.pretrained_weights, **overrides)


def run_training(
    settings: Settings,
    store: ObjectStore,
    job_id: str,
    epochs: int | None,
    *,
    on_progress: ProgressCallback,
    on_event: EventCallback,
) -> dict[str, Any]:
    """Train, evaluate candidate and production on every held-out part, gate, publish.

    Returns the fields the job record takes: status, candidate_version, gate.
    """
    from shared.model import card as cards
    from shared.model.data import concatenate, load_store_collections, photographs_from, split_validation
    from shared.model.training import train

    published = registry.published_card(store, job_id)
    if published is not None:
        return finish_published(store, published, job_id, on_event)
    started = time.monotonic()
    config = training_config(settings, epochs)
    progress = RunProgress(on_progress, views=config.views, epochs=config.head_epochs + config.finetune_epochs)
    progress.stage("loading")
    collections = load_store_collections(store)
    trained_on = [c.train for c in collections if c.train is not None]
    if not trained_on:
        raise BadInput("the store holds no training images: import or upload a collection first")
    train_data, validation = split_validation(concatenate(trained_on), config.validation_fraction)
    held_out = sum(len(c.test) for c in collections if c.test is not None)
    progress.sizes(train_images=len(train_data), evaluated_images=held_out + len(validation))
    parent = registry.production_version(store)
    initial_weights, initialised_from = production_weights(store, parent, config)
    if initial_weights is not None:
        config = dataclasses.replace(config, weights=None)  # the backbone comes from production
    external = [c.test for c in collections if c.external and c.test is not None]
    progress.stage("caching features")
    result = train(
        config,
        train_data,
        validation,
        # Scored after every epoch for the card's history; it chooses nothing.
        external=concatenate(external) if external else None,
        on_epoch=lambda epoch, total, record: progress.epoch(epoch, total, quiet_numbers(record)),
        initial_weights=initial_weights,
    )

    progress.stage("evaluating")
    version = job_id
    candidate = cards.package(
        version,
        result,
        config,
        train_data,
        validation,
        collections,
        source="store",
        parent=parent,
        runtime=settings.serving_runtime,
        photographs=photographs_from(settings.clinical_photos_dir),
    )
    production = _production_metrics(store, parent, collections)
    gate = decide(
        candidate.held_out,
        production,
        production_version=parent,
        auc_tolerance=settings.gate_auc_tolerance,
        sensitivity_tolerance=settings.gate_sensitivity_tolerance,
        min_malignant=settings.gate_min_malignant,
    )
    card = candidate.card
    card["training"]["seconds"]["job"] = time.monotonic() - started
    card["gate"] = gate
    card["training"]["initialised_from"] = initialised_from
    card["training_job"] = job_id
    progress.stage("publishing")
    files = {registry.KERAS_FILE: cards.keras_bytes(result.model), **candidate.files}
    registry.publish_version(store, version, files, card)
    on_event("model.published", {"version": version, "gate_passed": gate["passed"]})
    if gate["passed"]:
        audit.record_automatic_promotion(store, job_id, version, parent, gate)
        registry.promote(store, version, reason=f"training job {job_id} passed the gate")
        on_event("model.promoted", {"version": version, "previous": parent})
    return {"status": "promoted" if gate["passed"] else "rejected", "candidate_version": version, "gate": gate}


def finish_published(store: ObjectStore, card: ModelCard, job_id: str, on_event: EventCallback) -> dict[str, Any]:
    """A run resumed after its version was published (a crash between publishing and the job
    record): the version is not trained or written again. What the gate decided stands; a
    passed gate whose promotion did not happen yet is promoted now (promoting is idempotent)."""
    version = card.version
    gate = card.gate or {}
    log.info("job %s: version %s is already published; not training it again", job_id, version)
    if gate.get("passed") and registry.production_version(store) != version:
        previous = registry.production_version(store)
        audit.record_automatic_promotion(store, job_id, version, previous, gate)
        registry.promote(store, version, reason=f"training job {job_id} passed the gate")
        on_event("model.promoted", {"version": version, "previous": previous})
    return {"status": "promoted" if gate.get("passed") else "rejected", "candidate_version": version, "gate": gate}


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

    keras_file = registry.read_verified(store, registry.read_card(store, version), registry.KERAS_FILE)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / registry.KERAS_FILE
        path.write_bytes(keras_file)
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


def _production_metrics(store: ObjectStore, version: str | None, collections: list[Any]) -> dict[str, Any] | None:
    """Production's metrics on these very held-out parts, through its serving artifact and
    at its own thresholds (None when there is no production model)."""
    if version is None:
        return None
    from shared.model import card as cards
    from shared.serving.runtime import ServingModel

    card = registry.read_card(store, version)
    artifact = registry.read_verified(store, card, card.serving_artifact)
    return cards.evaluate_collections(ServingModel.from_bytes(version, artifact, card), collections)


def quiet_numbers(record: dict[str, Any]) -> dict[str, Any]:
    """Epoch metrics as plain floats (numpy scalars do not serialise to JSON)."""
    return {key: float(value) if isinstance(value, np.floating | float) else value for key, value in record.items()}
