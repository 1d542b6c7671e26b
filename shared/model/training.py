"""Train the classifier: head first, then fine-tuning of the upper backbone blocks.

Why the training loop looks unusual: on a 2-core CPU a full MobileNetV2 training step is
about 3x the cost of inference, so end-to-end fine-tuning buys only a handful of epochs per
hour. The lower backbone stays frozen (weights and batch-norm statistics) anyway, so its
output for a given input never changes. We therefore run each training image through the
lower part `views` times, each time under a different random augmentation, keep those
feature maps in memory (float16), and train only the upper blocks and the head on them,
drawing one of the stored views per image per epoch. Epochs become ~5x cheaper, which pays
for a longer schedule; the weights trained are the real model's layers, so the result is
the ordinary Keras model that `build_model` makes. The frozen lower part itself runs in
LiteRT rather than Keras while the cache is filled: 4-5x faster on these cores.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import keras
import numpy as np

from shared.model.architecture import BACKBONE_NAME, OUTPUT_NAME, build_model
from shared.model.data import DIAGNOSES, LabelledImages, augmented_views
from shared.model.evaluation import mean_auc_by_collection, roc_auc
from shared.model.export import export_litert
from shared.serving.runtime import LiteRtRuntime

log = logging.getLogger(__name__)

EpochCallback = Callable[[int, int, dict[str, Any]], None]


@dataclass(frozen=True)
class TrainingConfig:
    """Hyper-parameters of one run; stored in the model card. Learning rates per step."""

    weights: str | None = "imagenet"
    alpha: float = 1.0
    dropout_rate: float = 0.3
    # Shades-of-Gray normalisation inside the model: no better on Derm7pt, worse calibrated there.
    colour_constancy: bool = False
    seed: int = 1337
    validation_fraction: float = 0.2
    views: int = 6  # augmented copies of each training image kept as cached features
    # One of data.AUGMENTATIONS. Flips and 90-degree rotations only: the colour and the
    # dermoscopy jitter each lowered both HAM10000 validation and Derm7pt (docs/history/model-decisions.md).
    augmentation: str = "flips"
    batch_size: int = 32
    head_epochs: int = 2  # the head trains first, so fine-tuning starts from a head that fits
    head_learning_rate: float = 1e-3
    # First backbone layer that is trained: blocks 11-16 won the comparison of issue 21
    # (docs/history/model-decisions.md).
    finetune_from: str = "block_11_expand"
    finetune_epochs: int = 8
    finetune_learning_rate: float = 2e-4  # peak of the warm-up + cosine schedule
    warmup_epochs: int = 1
    weight_decay: float = 1e-4
    label_smoothing: float = 0.05
    # Within each class, weight diagnoses by count**-diagnosis_balance (0: plain class balance).
    # Square-root balancing (0.5) cost 0.04 of Derm7pt AUC, so it is off.
    diagnosis_balance: float = 0.0
    # Each collection's share of the loss grows as its image count ** collection_balance: 0
    # gives every collection the same say, 1 lets the largest set the model; 0.5 between.
    collection_balance: float = 0.5
    diagnosis_weight: float = 0.0  # auxiliary 7-way diagnosis loss, when labels exist (0: none)
    patience: int = 8  # fine-tuning epochs without a better validation AUC
    # Choose epochs by the diagnosis-balanced validation AUC (every diagnosis within a class
    # weighs the same) rather than the plain one, which HAM10000's nevi dominate.
    balanced_selection: bool = False
    average_top: int = 3  # average the weights of this many best epochs
    # Candidate shares of the head-only ("linear probe") model mixed into the fine-tuned
    # weights at the end (WiSE-FT); the validation AUC picks among them and 0 (no mixing).
    probe_mix: tuple[float, ...] = ()
    target_sensitivity: float = 0.90
    # ... on validation, with the lower bound of its interval at least this (card.operating_point).
    sensitivity_floor: float = 0.85

    @classmethod
    def quick(cls, **overrides: Any) -> TrainingConfig:
        """Seconds-long run for tests: random init, small width, one epoch per phase."""
        quick = cls(
            weights=None,
            alpha=0.35,
            views=1,
            head_epochs=1,
            finetune_epochs=1,
            warmup_epochs=0,
            patience=1,
            average_top=1,
            batch_size=8,
        )
        return replace(quick, **overrides)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class TrainingResult:
    model: keras.Model
    history: list[dict[str, Any]]
    validation_probabilities: np.ndarray  # raw model output on the validation split
    seconds: dict[str, float] = field(default_factory=dict)
    external_probabilities: np.ndarray | None = None  # raw output on the external collection, if any


def train(
    config: TrainingConfig,
    train_data: LabelledImages,
    validation: LabelledImages,
    *,
    on_epoch: EpochCallback | None = None,
    initial_weights: list[np.ndarray] | None = None,
    external: LabelledImages | None = None,
    shared_features: dict[tuple[Any, ...], tuple[Any, ...]] | None = None,
) -> TrainingResult:
    """Train on `train_data` from ImageNet (or `initial_weights`), choosing epochs by AUC on `validation`.

    `external` (another clinic's collection) is scored after every epoch and recorded in the
    history, but never chooses anything here: which recipe and which threshold travel is
    decided outside a run, by the rule in docs/history/model-decisions.md. `shared_features` lets runs on the
    same data (recipe comparisons) reuse the cached lower-backbone outputs when everything
    that makes them (weights, preprocessing, cut, views, augmentation, seed) is the same.
    """
    if len(np.unique(train_data.labels)) < 2 or len(np.unique(validation.labels)) < 2:
        raise ValueError("training and validation data must each hold both classes")
    started = time.monotonic()
    keras.utils.set_random_seed(config.seed)
    model = build_model(
        config.weights,
        alpha=config.alpha,
        dropout_rate=config.dropout_rate,
        seed=config.seed,
        colour_constancy=config.colour_constancy,
    )
    if initial_weights is not None:
        # Retraining continues from the production model rather than from ImageNet.
        model.set_weights(initial_weights)
    backbone = model.get_layer(BACKBONE_NAME)
    cut = backbone.get_layer(config.finetune_from).input
    lower = keras.Model(backbone.input, cut, name="lower")
    upper = keras.Model(cut, backbone.output, name="upper")
    extractor = keras.Model(model.input, lower(model.get_layer("to_unit_range").output))

    key = (
        config.weights,
        config.alpha,
        config.colour_constancy,
        config.finetune_from,
        config.views,
        config.augmentation,
        config.seed,
    )
    if shared_features is not None and initial_weights is None and key in shared_features:
        features, validation_features, external_features = shared_features[key]
    else:
        runtime = LiteRtRuntime(export_litert(extractor), os.cpu_count() or 1)
        features = _cache_views(runtime, extractor, train_data, config)
        validation_features = _lower_features(runtime, validation, config.batch_size)
        external_features = _lower_features(runtime, external, config.batch_size) if external is not None else None
        if shared_features is not None and initial_weights is None:
            shared_features[key] = (features, validation_features, external_features)
    seconds = {"feature_cache": time.monotonic() - started}
    log.info("cached %d views of %d images in %.0f s", config.views, len(train_data), seconds["feature_cache"])

    use_diagnoses = config.diagnosis_weight > 0 and train_data.has_diagnoses
    trainer = _training_model(model, upper, use_diagnoses)
    targets = _targets(train_data, use_diagnoses)
    weights = sample_weights(
        train_data, config.diagnosis_balance if train_data.has_diagnoses else 0.0, config.collection_balance
    )
    loop = _Loop(config, trainer, model, features, targets, weights, validation_features, validation, on_epoch)
    if external is not None and external_features is not None:
        loop.watch_external(external_features, external.labels)

    _set_trainable(backbone, None)
    loop.compile(keras.optimizers.Adam(config.head_learning_rate), use_diagnoses)
    loop.run("head", config.head_epochs)
    probe = model.get_weights()

    _set_trainable(backbone, config.finetune_from)
    steps = -(-len(train_data) // config.batch_size)
    schedule = keras.optimizers.schedules.CosineDecay(
        0.0 if config.warmup_epochs else config.finetune_learning_rate,
        decay_steps=max(1, (config.finetune_epochs - config.warmup_epochs) * steps),
        warmup_target=config.finetune_learning_rate if config.warmup_epochs else None,
        warmup_steps=config.warmup_epochs * steps,
    )
    loop.compile(keras.optimizers.AdamW(schedule, weight_decay=config.weight_decay), use_diagnoses)
    loop.run("finetune", config.finetune_epochs, patience=config.patience)
    loop.restore_average(config.average_top)
    loop.mix_in(probe, config.probe_mix)

    seconds["total"] = time.monotonic() - started
    probabilities = _predict(model, validation, config.batch_size)
    external_probabilities = _predict(model, external, config.batch_size) if external is not None else None
    return TrainingResult(model, loop.history, probabilities, seconds, external_probabilities)


def _predict(model: keras.Model, data: LabelledImages, batch_size: int) -> np.ndarray:
    return model.predict(data.pixels.astype(np.float32), batch_size=batch_size, verbose=0).reshape(-1)


def _cache_views(
    runtime: LiteRtRuntime, extractor: keras.Model, train_data: LabelledImages, config: TrainingConfig
) -> np.ndarray:
    """Lower-backbone outputs of `views` augmented copies of each training image (float16).

    The lower part runs in LiteRT, converted from `extractor` on the spot: on 2 cores it is
    4-5x faster than Keras here, and its outputs match Keras to about 1e-6 of their range,
    below the float16 rounding of the cache (docs/history/model-decisions.md).
    """
    features = np.empty((config.views, len(train_data), *extractor.output.shape[1:]), np.float16)
    for view in range(config.views):
        start = 0
        for batch in augmented_views(train_data.pixels, view, config.seed, config.batch_size, config.augmentation):
            features[view, start : start + len(batch)] = runtime.run(batch.numpy())[0]
            start += len(batch)
    return features


def _lower_features(runtime: LiteRtRuntime, data: LabelledImages, batch_size: int) -> np.ndarray:
    """Lower-backbone outputs of un-augmented images (float32): what evaluation runs on."""
    return np.concatenate(
        [
            runtime.run(data.pixels[start : start + batch_size].astype(np.float32))[0]
            for start in range(0, len(data), batch_size)
        ]
    )


def _training_model(model: keras.Model, upper: keras.Model, use_diagnoses: bool) -> keras.Model:
    """Upper blocks + the real model's head, fed cached features; optional diagnosis head."""
    inputs = keras.Input(upper.input.shape[1:], name="features")
    # training=False keeps batch-norm in inference mode: small-data fine-tuning recipe.
    pooled = model.get_layer("pool")(upper(inputs, training=False))
    dropped = model.get_layer("dropout")(pooled)
    outputs = [model.get_layer(OUTPUT_NAME)(dropped)]
    if use_diagnoses:
        # Seven diagnoses give a richer signal than two labels; the head is dropped after training.
        outputs.append(keras.layers.Dense(len(DIAGNOSES), activation="softmax", name="diagnosis")(dropped))
    return keras.Model(inputs, outputs, name="trainer")


def _targets(data: LabelledImages, use_diagnoses: bool) -> list[np.ndarray]:
    targets = [data.labels.astype(np.float32)[:, None]]
    if use_diagnoses:
        targets.append(keras.utils.to_categorical(data.diagnoses, len(DIAGNOSES)).astype(np.float32))
    return targets


def sample_weights(data: LabelledImages, diagnosis_balance: float, collection_balance: float = 1.0) -> np.ndarray:
    """Per-image loss weights (mean 1): each collection's share grows as its size **
    `collection_balance`; within a collection each class carries half; within a class, rarer
    diagnoses count more.

    Pooled as they come, HAM10000 (6,000 images) would drown a clinic's 500, and the model
    would learn HAM10000's look; with 0.5 the clinic's say is sqrt(500/6000) of HAM10000's
    instead of 1/12. HAM10000's benign class is 86% nevi, so a plainly class-balanced model
    learns "not a nevus" as much as "malignant"; weighting each diagnosis by
    count**-diagnosis_balance keeps every image but lets the rare diagnoses be heard.
    """
    groups = data.diagnoses.astype(np.int64) if diagnosis_balance > 0 else np.zeros(len(data), np.int64)
    weights = np.empty(len(data), np.float64)
    collections = data.collection_indices()
    shares = {name: len(members) ** collection_balance for name, members in collections.items()}
    for name, members in collections.items():
        labels = data.labels[members]
        present = np.unique(labels)
        for label in present:
            in_class = members[labels == label]
            group_counts = np.bincount(groups[in_class] + 1)  # +1: an unknown diagnosis (-1) is its own group
            raw = group_counts[groups[in_class] + 1].astype(np.float64) ** -diagnosis_balance
            weights[in_class] = raw / raw.sum() * shares[name] / len(present)
    return (weights * len(data) / weights.sum()).astype(np.float32)


def _set_trainable(backbone: keras.Model, first: str | None) -> None:
    """Train backbone layers from `first` on (none when None); batch-norm stays frozen."""
    backbone.trainable = first is not None
    reached = False
    for layer in backbone.layers:
        reached = reached or layer.name == first
        layer.trainable = reached and not isinstance(layer, keras.layers.BatchNormalization)


class _Loop:
    """Epoch loop over cached features with validation AUC, early stopping and snapshots."""

    def __init__(
        self,
        config: TrainingConfig,
        trainer: keras.Model,
        model: keras.Model,
        features: np.ndarray,
        targets: list[np.ndarray],
        weights: np.ndarray,
        validation_features: np.ndarray,
        validation: LabelledImages,
        on_epoch: EpochCallback | None,
    ) -> None:
        self.config, self.trainer, self.model = config, trainer, model
        self.features, self.targets, self.weights = features, targets, weights
        self.validation_features, self.validation_labels = validation_features, validation.labels
        self.validation_collections = validation.collection_indices()
        # Selection gives every diagnosis in a class the same say: other collections mix
        # diagnoses differently from HAM10000, whose benign class is 86% nevi.
        balanced = config.balanced_selection and validation.has_diagnoses
        self.validation_weights = sample_weights(validation, 1.0) if balanced else None
        self.external_features: np.ndarray | None = None
        self.external_labels: np.ndarray | None = None
        self.on_epoch = on_epoch
        self.rng = np.random.default_rng(config.seed)
        self.view_offsets = self.rng.integers(0, features.shape[0], size=features.shape[1])
        self.history: list[dict[str, Any]] = []
        self.snapshots: list[tuple[float, int, list[np.ndarray]]] = []
        self.total = config.head_epochs + config.finetune_epochs

    def compile(self, optimizer: keras.optimizers.Optimizer, use_diagnoses: bool) -> None:
        smoothing = self.config.label_smoothing
        losses: list[keras.losses.Loss] = [keras.losses.BinaryCrossentropy(label_smoothing=smoothing)]
        loss_weights = [1.0]
        if use_diagnoses:
            losses.append(keras.losses.CategoricalCrossentropy(label_smoothing=smoothing))
            loss_weights.append(self.config.diagnosis_weight)
        self.trainer.compile(optimizer=optimizer, loss=losses, loss_weights=loss_weights)

    def watch_external(self, features: np.ndarray, labels: np.ndarray) -> None:
        """Also record the AUC on an external collection (never used for a choice)."""
        self.external_features, self.external_labels = features, labels

    def _malignant(self, features: np.ndarray) -> np.ndarray:
        outputs = self.trainer.predict(features, batch_size=64, verbose=0)
        return (outputs[0] if isinstance(outputs, list) else outputs).reshape(-1)

    def validation_auc(self) -> float:
        scores = self._malignant(self.validation_features)
        if self.validation_weights is not None:
            return roc_auc(self.validation_labels, scores, self.validation_weights)
        return mean_auc_by_collection(self.validation_labels, scores, self.validation_collections)

    def external_record(self) -> dict[str, float]:
        if self.external_features is None:
            return {}
        return {"external_auc": roc_auc(self.external_labels, self._malignant(self.external_features))}

    def run(self, phase: str, epochs: int, *, patience: int | None = None) -> None:
        best, since_best = -1.0, 0
        count = self.features.shape[1]
        for _ in range(epochs):
            started = time.monotonic()
            inputs = self.features[self._views_for(len(self.history)), np.arange(count)].astype(np.float32)
            fit = self.trainer.fit(
                inputs,
                self.targets,
                sample_weight=self.weights,
                batch_size=self.config.batch_size,
                epochs=1,
                shuffle=True,
                verbose=0,
            )
            auc = self.validation_auc()
            record = {
                "phase": phase,
                "epoch": len(self.history) + 1,
                "loss": float(fit.history["loss"][-1]),
                "val_auc": auc,
                **self.external_record(),
                "seconds": time.monotonic() - started,
            }
            self.history.append(record)
            log.info("epoch %(epoch)d (%(phase)s): loss %(loss).4f, val AUC %(val_auc).4f, %(seconds).0f s", record)
            if self.on_epoch:
                self.on_epoch(record["epoch"], self.total, record)
            if phase == "finetune":
                self.snapshots.append((auc, record["epoch"], self.model.get_weights()))
                self.snapshots = sorted(self.snapshots, key=lambda s: -s[0])[: max(1, self.config.average_top)]
            best, since_best = (auc, 0) if auc > best else (best, since_best + 1)
            if patience is not None and since_best >= patience:
                log.info("early stop: no better validation AUC for %d epochs", patience)
                break

    def _views_for(self, epoch: int) -> np.ndarray:
        """The stored view each image is trained on in `epoch`.

        Each image walks through its views from its own random starting point, so no view
        repeats before all have been seen: with as many views as epochs, every epoch is a
        fresh augmentation, as without a cache.
        """
        return (self.view_offsets + epoch) % self.features.shape[0]

    def restore_average(self, top: int) -> None:
        """Keep the better (on validation AUC) of the best epoch and the mean of the top epochs."""
        if not self.snapshots:
            return
        best_auc, best_epoch, best_weights = self.snapshots[0]
        chosen = {"source": f"epoch {best_epoch}", "val_auc": best_auc}
        if top > 1 and len(self.snapshots) > 1:
            averaged = [np.mean(group, axis=0) for group in zip(*(s[2] for s in self.snapshots), strict=True)]
            self.model.set_weights(averaged)
            averaged_auc = self.validation_auc()
            if averaged_auc >= best_auc:
                epochs = sorted(s[1] for s in self.snapshots)
                chosen = {"source": f"mean of epochs {epochs}", "val_auc": averaged_auc}
            else:
                self.model.set_weights(best_weights)
        else:
            self.model.set_weights(best_weights)
        self.history.append({"phase": "selected", **chosen, **self.external_record()})
        log.info("selected weights: %s (val AUC %.4f)", chosen["source"], chosen["val_auc"])

    def mix_in(self, probe: list[np.ndarray], shares: tuple[float, ...]) -> None:
        """Blend the head-only weights into the fine-tuned ones where validation AUC says so.

        Weight-space ensembling of the zero-distortion and fine-tuned endpoints of one run
        (Wortsman et al. 2022, WiSE-FT) tends to hold up better under a change of data
        source than either endpoint.
        """
        tuned = self.model.get_weights()
        aucs: dict[float, float] = {}
        for share in (0.0, *shares):
            self.model.set_weights(_blend(tuned, probe, share))
            aucs[share] = self.validation_auc()
            self.history.append(
                {"phase": "probe_mix", "share": share, "val_auc": aucs[share], **self.external_record()}
            )
            log.info("probe share %.2f: val AUC %.4f", share, aucs[share])
        best = max(aucs, key=aucs.__getitem__)  # the first of equals: less mixing
        self.model.set_weights(_blend(tuned, probe, best))
        self.history.append({"phase": "selected_mix", "share": best, "val_auc": aucs[best]})


def _blend(tuned: list[np.ndarray], probe: list[np.ndarray], share: float) -> list[np.ndarray]:
    return [(1 - share) * t + share * p for t, p in zip(tuned, probe, strict=True)]
