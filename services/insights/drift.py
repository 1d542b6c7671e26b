"""Input drift: do the images of recent predictions look like the ones a version was trained on?

Workers publish `predictions.scored` after each batch: per prediction, the domain score, the
two warnings and a 16-number projection of the image's block statistics (shared/serving/domain.py).
`DriftMonitor` keeps the last `WINDOW` predictions of each model version and compares their
projections with the version's `reference_projection` (validation images, never trained on) by
the maximum mean discrepancy with a Gaussian (RBF) kernel. One image unlike the training
images moves the window little; a stream from another clinic or another kind of camera moves
the whole distribution, which a per-image score cannot see but MMD does.

- The kernel's length scale is the median distance between reference points (the median
  heuristic), fixed per version: computed on the reference alone, so the same window always
  gets the same figure, and the threshold means one thing for a version's whole life.
- The figure is the square root of the unbiased MMD² estimate, clipped at 0: it grows about
  linearly with the share of the window that changed, and is about 0 when nothing did.
- Below `MIN_WINDOW` predictions it is not computed: a handful of images says nothing.

`DRIFT_THRESHOLD` is the figure above which `InputDrift` fires (deploy/prometheus/alerts.yml
holds the same number; tests check they agree); it was chosen by replaying real collections
through the served model (docs/insights.md, "Input drift").
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from shared.errors import MessageDecodeError

WINDOW = 200
MIN_WINDOW = 100
DRIFT_THRESHOLD = 0.2
WARNINGS = ("unlike_training", "not_dermoscopy")
# A version without predictions for a day is no longer served: its window and series go.
FORGET_AFTER_S = 86_400.0
# After a failed load (the store away), a version's reference is tried again this much later.
RELOAD_AFTER_S = 30.0
DAY_S = 86_400.0
HOUR_S = 3_600.0

# A version's drift reference (N, components), or None when it has none.
ReferenceLoader = Callable[[str], "np.ndarray | None"]


def squared_distances(left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """Pairwise squared Euclidean distances (len(left), len(right))."""
    squared = (left**2).sum(axis=1)[:, None] + (right**2).sum(axis=1)[None, :] - 2 * left @ right.T
    return np.maximum(squared, 0.0)


def median_bandwidth(reference: np.ndarray) -> float:
    """The median distance between distinct reference points: the RBF kernel's length scale."""
    distances = squared_distances(reference, reference)[np.triu_indices(len(reference), k=1)]
    return max(float(np.sqrt(np.median(distances))), 1e-12)


def rbf(left: np.ndarray, right: np.ndarray, bandwidth: float) -> np.ndarray:
    return np.exp(-squared_distances(left, right) / (2 * bandwidth**2))


def mean_off_diagonal(kernel: np.ndarray) -> float:
    """The mean of a square kernel matrix without its diagonal (each point with itself)."""
    size = len(kernel)
    return float((kernel.sum() - np.trace(kernel)) / (size * (size - 1)))


@dataclass(frozen=True)
class Reference:
    """A version's drift reference with what every comparison against it reuses."""

    points: np.ndarray
    bandwidth: float
    self_similarity: float  # the reference-reference term of MMD², computed once

    @classmethod
    def of(cls, points: np.ndarray) -> Reference:
        points = np.asarray(points, dtype=np.float64)
        if points.ndim != 2 or len(points) < 2:
            raise ValueError(f"a drift reference needs at least 2 points, got shape {points.shape}")
        bandwidth = median_bandwidth(points)
        return cls(points, bandwidth, mean_off_diagonal(rbf(points, points, bandwidth)))

    def drift(self, sample: np.ndarray) -> float:
        """sqrt(max(0, unbiased MMD²)) between `sample` (at least 2 rows) and the reference."""
        sample = np.asarray(sample, dtype=np.float64)
        within = mean_off_diagonal(rbf(sample, sample, self.bandwidth))
        across = float(rbf(sample, self.points, self.bandwidth).mean())
        return math.sqrt(max(within + self.self_similarity - 2 * across, 0.0))


@dataclass(frozen=True)
class Scored:
    """One prediction of a `predictions.scored` event: what the window keeps of it."""

    projection: np.ndarray
    flags: dict[str, bool | None]

    @classmethod
    def parse(cls, item: Any, components: int | None) -> Scored:
        if not isinstance(item, dict):
            raise MessageDecodeError(f"a scored prediction must be an object, got {type(item).__name__}")
        projection = np.asarray(item.get("projection"), dtype=np.float64)
        if projection.ndim != 1 or not len(projection) or not np.isfinite(projection).all():
            raise MessageDecodeError("a scored prediction needs a finite projection")
        if components is not None and len(projection) != components:
            raise MessageDecodeError(f"projection of {len(projection)} numbers, the window holds {components}")
        flags = {warning: item.get(warning) for warning in WARNINGS}
        if any(value is not None and not isinstance(value, bool) for value in flags.values()):
            raise MessageDecodeError(f"warnings must be true, false or null: {flags}")
        return cls(projection, flags)


@dataclass
class DayCounts:
    """One hour's predictions and warnings of a version, and the highest drift figure in it."""

    predictions: int = 0
    flagged: dict[str, int] = field(default_factory=lambda: dict.fromkeys(WARNINGS, 0))
    judged: dict[str, int] = field(default_factory=lambda: dict.fromkeys(WARNINGS, 0))
    drift_max: float | None = None


class VersionWindow:
    """The last `size` predictions of one model version, and its hours of the last day."""

    def __init__(self, size: int) -> None:
        self.predictions: deque[Scored] = deque(maxlen=size)
        self.hours: dict[int, DayCounts] = {}
        self.drift: float | None = None
        self.last_seen = 0.0

    @property
    def components(self) -> int | None:
        """Numbers in each projection of the window (None while it is empty)."""
        return len(self.predictions[0].projection) if self.predictions else None

    def projections(self) -> np.ndarray:
        return np.stack([item.projection for item in self.predictions])

    def add(self, scored: list[Scored], now: float) -> None:
        self.predictions.extend(scored)
        self.last_seen = now
        hour = self.hours.setdefault(int(now // HOUR_S), DayCounts())
        hour.predictions += len(scored)
        for warning in WARNINGS:
            values = [item.flags[warning] for item in scored if item.flags[warning] is not None]
            hour.judged[warning] += len(values)
            hour.flagged[warning] += sum(values)
        self.hours = {start: counts for start, counts in self.hours.items() if (start + 1) * HOUR_S > now - DAY_S}

    def note_drift(self, drift: float | None, now: float) -> None:
        self.drift = drift
        hour = self.hours.get(int(now // HOUR_S))
        if drift is not None and hour is not None:
            hour.drift_max = drift if hour.drift_max is None else max(hour.drift_max, drift)

    def flagged_share(self, warning: str) -> float | None:
        """Share of the window's predictions with `warning` among those judged for it."""
        values = [item.flags[warning] for item in self.predictions if item.flags[warning] is not None]
        return sum(values) / len(values) if values else None

    def summary(self) -> dict[str, Any]:
        hours = list(self.hours.values())
        judged = {warning: sum(hour.judged[warning] for hour in hours) for warning in WARNINGS}
        flagged = {warning: sum(hour.flagged[warning] for hour in hours) for warning in WARNINGS}
        highs = [hour.drift_max for hour in hours if hour.drift_max is not None]
        return {
            "window": {
                "predictions": len(self.predictions),
                "drift": None if self.drift is None else round(self.drift, 4),
                "flagged_share": {warning: _rounded(self.flagged_share(warning)) for warning in WARNINGS},
            },
            "last_day": {
                "predictions": sum(hour.predictions for hour in hours),
                "flagged_share": {
                    warning: _rounded(flagged[warning] / judged[warning] if judged[warning] else None)
                    for warning in WARNINGS
                },
                "drift_max": round(max(highs), 4) if highs else None,
            },
            "last_seen": self.last_seen,
        }


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 4)
