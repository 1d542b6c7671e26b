"""Is this image like the ones the model was trained on? The out-of-domain score of a version.

A probability means something only for dermatoscope images like the training images. The
served artifact has, beside the probability, the channel mean and standard deviation of the
outputs of MobileNetV2 blocks 5 to 12 (`BLOCK_STATISTICS`): texture and colour statistics at
several scales, which tell a camera photograph or another clinic's dermatoscope from the
training images far better than the final pooled features (docs/history/model-decisions.md,
"Out-of-domain features"). Two judgements are made from them, each fitted when a version is packaged:

- `unlike_training` (a mild caution): one shrunk Gaussian per block, fitted on training images;
  the summed Mahalanobis distances, over the distance that 1% of validation images exceed, is
  the answer's `score`. A score of 1 or more raises the caution.
- `not_dermoscopy` (a strong warning): a score of `FAR_SCORE` or more (twice the caution's
  distance: no dermoscopy set measured here reaches it), or a logistic regression of
  dermoscopy (training images) against clinical photographs (half of a folder of them; the
  other half is kept out to report on) leaning towards "photograph". The regression's
  threshold lets at most 0.5% of validation images through and is never below even odds.
  Fitted on one collection of photographs, it may know that collection rather than every
  photograph; the distance rule does not depend on any.

Also a projection of the statistics on their first principal components, with a reference
sample of validation images: what the insights service compares recent predictions with to
measure drift. This module is numpy only: workers score with it, the trainer fits with it.
"""

from __future__ import annotations

import hashlib
import io
import itertools
from dataclasses import dataclass
from typing import Any

import numpy as np

# The blocks whose statistics the artifact outputs (shared/model/export.py).
BLOCKS = tuple(range(5, 13))
DOMAIN_FILE = "domain.npz"
# Covariance shrinkage towards a scaled identity: 1,152 statistics, a few thousand images.
SHRINKAGE = 0.1
# Validation images above the thresholds: the false-warning rates the thresholds are set for.
UNLIKE_TRAINING_SHARE = 0.01
NOT_DERMOSCOPY_SHARE = 0.005
# A score this high is "not dermoscopy" whatever the detector says (docs/model.md: 0% of
# ISIC 2018 test, Derm7pt and ISIC 2020 images reach it; a flat grey square scores 2.2).
FAR_SCORE = 2.0
PROJECTION_COMPONENTS = 16
REFERENCE_SAMPLE = 500
LOGISTIC_L2 = 1.0
LOGISTIC_STEPS = 1500


@dataclass(frozen=True)
class DomainJudgement:
    """The answer's `domain` for one image."""

    score: float
    unlike_training: bool
    not_dermoscopy: bool

    def public(self) -> dict[str, Any]:
        return {
            "available": True,
            "score": round(self.score, 4),
            "unlike_training": self.unlike_training,
            "not_dermoscopy": self.not_dermoscopy,
        }


def drift_sample(probability: float, judgement: DomainJudgement, projection: np.ndarray) -> dict[str, Any]:
    """What the drift monitor hears of one prediction (an item of a `predictions.scored` event)."""
    return {
        "probability": probability,
        "score": judgement.score,
        "unlike_training": judgement.unlike_training,
        "not_dermoscopy": judgement.not_dermoscopy,
        "projection": [round(float(value), 4) for value in projection],
    }


def not_available(version: str) -> dict[str, Any]:
    """The answer's `domain` when the serving version has no domain statistics (older cards)."""
    return {
        "available": False,
        "score": None,
        "unlike_training": None,
        "not_dermoscopy": None,
        "reason": f"model version {version} was packaged without domain statistics",
    }


class DomainModel:
    """A version's fitted domain statistics (`domain.npz`)."""

    def __init__(self, arrays: dict[str, np.ndarray]) -> None:
        self.widths = arrays["block_widths"].astype(int)
        offsets = np.concatenate([[0], np.cumsum(self.widths)])
        self._slices = [slice(int(a), int(b)) for a, b in itertools.pairwise(offsets)]
        self._means = [arrays[f"block_{i}_mean"] for i in range(len(self.widths))]
        self._precisions = [arrays[f"block_{i}_precision"] for i in range(len(self.widths))]
        self.unlike_threshold = float(arrays["unlike_threshold"])
        self._standard_mean = arrays["standard_mean"]
        self._standard_scale = arrays["standard_scale"]
        self._components = arrays["components"]
        self.reference_projection = arrays["reference_projection"]
        self._coef = arrays.get("logistic_coef")
        self._bias = float(arrays["logistic_bias"]) if "logistic_bias" in arrays else 0.0
        self.not_dermoscopy_threshold = float(arrays["not_dermoscopy_threshold"]) if self._coef is not None else None

    @classmethod
    def from_bytes(cls, data: bytes) -> DomainModel:
        with np.load(io.BytesIO(data), allow_pickle=False) as loaded:
            return cls({name: loaded[name] for name in loaded.files})

    @property
    def features(self) -> int:
        return int(self.widths.sum())

    def distance(self, statistics: np.ndarray) -> np.ndarray:
        """Summed per-block Mahalanobis distances of a batch (N, features) to the training images."""
        total = np.zeros(len(statistics))
        for part, mean, precision in zip(self._slices, self._means, self._precisions, strict=True):
            centred = statistics[:, part].astype(np.float64) - mean
            total += np.sqrt(np.maximum(np.einsum("ij,jk,ik->i", centred, precision, centred), 0.0))
        return total

    def score(self, statistics: np.ndarray) -> np.ndarray:
        """The answer's score: 1.0 is the `unlike_training` threshold."""
        return self.distance(statistics) / self.unlike_threshold

    def dermoscopy_logit(self, statistics: np.ndarray) -> np.ndarray | None:
        """Log-odds that each image is not a dermatoscope image (None: no detector)."""
        if self._coef is None:
            return None
        return self._standardise(statistics) @ self._coef + self._bias

    def project(self, statistics: np.ndarray) -> np.ndarray:
        """The first principal components of the standardised statistics (N, PROJECTION_COMPONENTS)."""
        return self._standardise(statistics) @ self._components.T

    def judge(self, statistics: np.ndarray) -> list[DomainJudgement]:
        scores = self.score(statistics)
        logits = self.dermoscopy_logit(statistics)
        return [
            DomainJudgement(
                score=float(score),
                unlike_training=bool(score >= 1.0),
                not_dermoscopy=bool(
                    score >= FAR_SCORE or (logits is not None and logits[index] >= self.not_dermoscopy_threshold)
                ),
            )
            for index, score in enumerate(scores)
        ]

    def _standardise(self, statistics: np.ndarray) -> np.ndarray:
        return (statistics.astype(np.float64) - self._standard_mean) / self._standard_scale


def in_fitted_half(file_name: str) -> bool:
    """Which half of a folder of clinical photographs the `not_dermoscopy` detector is fitted
    on: a fixed rule (the first byte of the name's SHA-256 is even), so that the other half
    stays unseen across versions and can be reported on."""
    return hashlib.sha256(file_name.encode()).digest()[0] % 2 == 0


def flagged_shares(judgements: list[DomainJudgement]) -> dict[str, Any]:
    """How often each warning was raised among `judgements`, for cards and benchmarks."""
    return {
        "n": len(judgements),
        "unlike_training": sum(j.unlike_training for j in judgements) / len(judgements),
        "not_dermoscopy": sum(j.not_dermoscopy for j in judgements) / len(judgements),
        "median_score": float(np.median([j.score for j in judgements])),
    }


@dataclass(frozen=True)
class FittedDomain:
    """What packaging stores: the arrays file and the card's account of how it was fitted."""

    file: bytes
    card: dict[str, Any]


def fit(
    training: np.ndarray,
    validation: np.ndarray,
    photographs: np.ndarray | None,
    *,
    widths: list[int],
    photographs_source: str = "",
    seed: int = 1337,
) -> FittedDomain:
    """Fit the domain statistics of a version from block statistics (N, features) of its
    training images, its validation images (thresholds and the drift reference) and, when
    given, clinical photographs (the `not_dermoscopy` detector's other class). `widths` is
    each block's number of statistics, in the artifact's order."""
    if sum(widths) != training.shape[1]:
        raise ValueError(f"block widths {widths} do not add up to {training.shape[1]} statistics")
    offsets = np.concatenate([[0], np.cumsum(widths)])
    arrays: dict[str, np.ndarray] = {"block_widths": np.array(widths)}
    for index, (start, stop) in enumerate(itertools.pairwise(offsets)):
        mean, precision = _shrunk_gaussian(training[:, start:stop].astype(np.float64))
        arrays[f"block_{index}_mean"] = mean
        arrays[f"block_{index}_precision"] = precision
    standard_mean = training.mean(axis=0).astype(np.float64)
    standard_scale = training.std(axis=0).astype(np.float64) + 1e-6
    arrays |= {"standard_mean": standard_mean, "standard_scale": standard_scale, "unlike_threshold": np.array(1.0)}
    # Principal components of the standardised training statistics, for the drift projection.
    standard = (training - standard_mean) / standard_scale
    _, _, right = np.linalg.svd(standard - standard.mean(axis=0), full_matrices=False)
    arrays["components"] = right[:PROJECTION_COMPONENTS]
    arrays["reference_projection"] = np.zeros((0, PROJECTION_COMPONENTS))
    draft = DomainModel(arrays)
    distances = draft.distance(validation)
    arrays["unlike_threshold"] = np.array(float(np.quantile(distances, 1 - UNLIKE_TRAINING_SHARE)))
    rng = np.random.default_rng(seed)
    reference = validation[rng.permutation(len(validation))[:REFERENCE_SAMPLE]]
    arrays["reference_projection"] = draft.project(reference)
    card: dict[str, Any] = {
        "file": DOMAIN_FILE,
        "features": f"channel mean and std of MobileNetV2 blocks {BLOCKS[0]}-{BLOCKS[-1]} ({training.shape[1]})",
        "score": "summed per-block Mahalanobis distance (shrunk Gaussians fitted on training images) over the"
        f" unlike_training threshold: the distance {UNLIKE_TRAINING_SHARE:.0%} of validation images exceed",
        "fitted_on": {"training_images": len(training), "validation_images": len(validation)},
        "unlike_training": {"threshold_score": 1.0, "distance": float(arrays["unlike_threshold"])},
        "shrinkage": SHRINKAGE,
        "drift_projection": {"components": len(arrays["components"]), "reference_images": len(reference)},
    }
    validation_scores = distances / float(arrays["unlike_threshold"])
    card["not_dermoscopy"] = {
        "far_score": FAR_SCORE,
        "validation_at_far_score": float((validation_scores >= FAR_SCORE).mean()),
        "detector": None,
    }
    if photographs is not None and len(photographs):
        coef, bias = _logistic_regression(standard, (photographs - standard_mean) / standard_scale)
        arrays |= {"logistic_coef": coef, "logistic_bias": np.array(bias)}
        validation_logits = ((validation - standard_mean) / standard_scale) @ coef + bias
        # Never below even odds: a detector that separates well still needs to lean towards "photo".
        threshold = max(float(np.quantile(validation_logits, 1 - NOT_DERMOSCOPY_SHARE)), 0.0)
        arrays["not_dermoscopy_threshold"] = np.array(threshold)
        card["not_dermoscopy"]["detector"] = {
            "model": f"logistic regression on the standardised statistics, classes weighted equally, L2 {LOGISTIC_L2}",
            "photographs": len(photographs),
            "photographs_source": photographs_source,
            "threshold_logit": threshold,
            "threshold_rule": f"at most {NOT_DERMOSCOPY_SHARE:.1%} of validation images flagged, never below even odds",
        }
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return FittedDomain(buffer.getvalue(), card)


def _shrunk_gaussian(samples: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(mean, precision) with the covariance shrunk towards its mean variance."""
    mean = samples.mean(axis=0)
    covariance = np.atleast_2d(np.cov(samples - mean, rowvar=False))
    target = np.eye(len(covariance)) * np.trace(covariance) / len(covariance)
    shrunk = (1 - SHRINKAGE) * covariance + SHRINKAGE * target + 1e-9 * np.eye(len(covariance))
    return mean, np.linalg.inv(shrunk)


def _logistic_regression(inside: np.ndarray, outside: np.ndarray) -> tuple[np.ndarray, float]:
    """L2-penalised logistic regression, classes weighted equally, by full-batch gradient
    descent (no scikit-learn in the images for one small convex fit). Returns (coef, bias):
    positive log-odds mean `outside`."""
    data = np.concatenate([inside, outside])
    labels = np.concatenate([np.zeros(len(inside)), np.ones(len(outside))])
    weights = np.where(labels == 1, len(data) / (2 * len(outside)), len(data) / (2 * len(inside)))
    coef, bias = np.zeros(data.shape[1]), 0.0
    for _ in range(LOGISTIC_STEPS):
        predicted = 1 / (1 + np.exp(-np.clip(data @ coef + bias, -30, 30)))
        error = (predicted - labels) * weights
        coef -= 0.1 * (data.T @ error / len(data) + LOGISTIC_L2 * coef / len(data))
        bias -= 0.1 * float(error.mean())
    return coef, bias
