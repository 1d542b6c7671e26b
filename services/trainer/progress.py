"""Where a training run is, and how long it has left: what the Retrain tab shows.

The estimate starts from per-image costs measured on a 2-core machine (the clinic retraining
of docs/history/model-decisions.md: 10,434 images, 6.8 minutes) and corrects itself by what this run has
measured so far: once the feature cache is filled, its speed relative to that machine's
scales every later step; once epochs have run, their mean time replaces the epoch estimate.
The machines here differ by up to 2x from day to day, so the first estimate is rough.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

# Seconds on that machine: one augmented view through the frozen lower backbone, one
# training image in one epoch, one held-out or validation image evaluated (candidate export,
# parity check, both models' scores, publishing).
CACHE_SECONDS_PER_VIEW = 0.0028
EPOCH_SECONDS_PER_IMAGE = 0.0038
EVALUATION_SECONDS_PER_IMAGE = 0.02

ProgressCallback = Callable[[dict[str, Any]], None]


class RunProgress:
    """Reports each stage and epoch with the elapsed time and an estimate of the time left."""

    def __init__(self, report: ProgressCallback, *, views: int, epochs: int) -> None:
        self.report = report
        self.views, self.epochs = views, epochs
        self.train_images = self.evaluated_images = 0
        self.started = time.monotonic()
        self.stage_started = self.started
        self.speed = 1.0  # this machine's time / the reference's, once measured
        self.epoch_seconds: list[float] = []

    def sizes(self, *, train_images: int, evaluated_images: int) -> None:
        """What the run will work on, once loaded: the estimate starts from these."""
        self.train_images, self.evaluated_images = train_images, evaluated_images

    def stage(self, name: str) -> None:
        self.stage_started = time.monotonic()
        self._send(name, 0, {})

    def epoch(self, epoch: int, total: int, record: dict[str, Any]) -> None:
        if not self.epoch_seconds:
            cache_seconds = time.monotonic() - self.stage_started - record.get("seconds", 0.0)
            expected = CACHE_SECONDS_PER_VIEW * self.train_images * self.views
            self.speed = max(cache_seconds, 1e-3) / max(expected, 1e-3)
        self.epoch_seconds.append(float(record.get("seconds", 0.0)))
        self.epochs = total
        self._send("training", epoch, record)

    def _send(self, stage: str, epoch: int, record: dict[str, Any]) -> None:
        self.report(
            {
                "stage": stage,
                "epoch": epoch,
                "epochs": self.epochs,
                "metrics": record,
                "elapsed_seconds": round(time.monotonic() - self.started, 1),
                "eta_seconds": self._seconds_left(stage, epoch),
            }
        )

    def _seconds_left(self, stage: str, epoch: int) -> float | None:
        """The estimate of the time left, or None while loading (image count still unknown)."""
        if stage == "loading":
            return None
        evaluation = EVALUATION_SECONDS_PER_IMAGE * self.evaluated_images * self.speed
        if stage in ("evaluating", "publishing"):
            spent = time.monotonic() - self.stage_started if stage == "evaluating" else evaluation
            return round(max(evaluation - spent, 0.0), 1)
        per_epoch = (
            sum(self.epoch_seconds) / len(self.epoch_seconds)
            if self.epoch_seconds
            else EPOCH_SECONDS_PER_IMAGE * self.train_images * self.speed
        )
        remaining = per_epoch * (self.epochs - epoch) + evaluation
        if stage == "caching features":
            cache = CACHE_SECONDS_PER_VIEW * self.train_images * self.views
            remaining += max(cache - (time.monotonic() - self.stage_started), 0.0)
        return round(remaining, 1)
