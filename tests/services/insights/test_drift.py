"""The drift statistic and the windows it is computed on: pure logic, no broker, no store."""

from __future__ import annotations

import json
import uuid

import numpy as np
import pytest

from services.insights.drift import MIN_WINDOW, RELOAD_AFTER_S, Reference, Scored, VersionWindow, median_bandwidth
from services.insights.drift_consumer import DriftMonitor
from shared.errors import MessageDecodeError, StorageUnavailable
from shared.messaging.schemas import Event
from shared.messaging.topology import EVENT_PREDICTIONS_SCORED
from shared.metrics import INPUT_DRIFT, INPUT_DRIFT_WINDOW, INPUT_FLAGGED_SHARE

COMPONENTS = 16


def points(count: int, *, shift: float = 0.0, scale: float = 1.0, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(shift, scale, (count, COMPONENTS))


def event_body(version: str, projections: np.ndarray, *, unlike: bool = False, photo: bool | None = False) -> bytes:
    predictions = [
        {"probability": 0.2, "score": 0.5, "unlike_training": unlike, "not_dermoscopy": photo, "projection": row}
        for row in projections.tolist()
    ]
    data = {"model_version": version, "predictions": predictions}
    return Event(name=EVENT_PREDICTIONS_SCORED, event_id=uuid.uuid4().hex, occurred_at=0.0, data=data).encode()


def sample_value(gauge, *labels: str) -> float | None:
    for metric in gauge.collect():
        for sample in metric.samples:
            if tuple(sample.labels.values()) == labels:
                return sample.value
    return None


def test_the_median_heuristic_bandwidth_is_the_median_distance_between_reference_points() -> None:
    reference = np.array([[0.0, 0.0], [3.0, 0.0], [0.0, 4.0]])  # distances 3, 4 and 5
    assert median_bandwidth(reference) == pytest.approx(4.0)


def test_a_window_from_the_reference_distribution_has_a_drift_near_zero() -> None:
    reference = Reference.of(points(500, seed=1))
    assert reference.drift(points(300, seed=2)) < 0.1


@pytest.mark.parametrize(
    ("change", "window"),
    [
        ("mean shifted by one standard deviation", points(300, shift=1.0, seed=2)),
        ("spread doubled", points(300, scale=2.0, seed=2)),
    ],
)
def test_a_changed_distribution_has_a_drift_well_above_an_unchanged_one(change: str, window: np.ndarray) -> None:
    reference = Reference.of(points(500, seed=1))
    assert reference.drift(window) > 3 * reference.drift(points(300, seed=2)), change


def test_drift_grows_with_the_share_of_the_window_that_changed() -> None:
    reference = Reference.of(points(500, seed=1))
    alike, shifted = points(300, seed=2), points(300, shift=1.0, seed=3)
    figures = [reference.drift(np.concatenate([alike[changed:], shifted[:changed]])) for changed in (0, 100, 200, 300)]
    assert figures == sorted(figures)
    # About linear: the whole window changed gives about three times what a third gives.
    assert figures[3] / figures[1] == pytest.approx(3, rel=0.35)


def test_a_reference_needs_two_points() -> None:
    with pytest.raises(ValueError, match="at least 2 points"):
        Reference.of(points(1))


@pytest.mark.parametrize(
    ("item", "reason"),
    [
        ("not an object", "must be an object"),
        ({"projection": None}, "finite projection"),
        ({"projection": [1.0, float("nan")]}, "finite projection"),
        ({"projection": [1.0] * 15}, "projection of 15 numbers"),
        ({"projection": [1.0] * 16, "unlike_training": "yes"}, "true, false or null"),
    ],
)
def test_a_malformed_scored_prediction_is_refused_with_the_reason(item: object, reason: str) -> None:
    with pytest.raises(MessageDecodeError, match=reason):
        Scored.parse(item, COMPONENTS)


def test_the_window_keeps_the_last_predictions_and_counts_the_warnings_of_the_day() -> None:
    window = VersionWindow(size=4)
    flagged = Scored(np.zeros(2), {"unlike_training": True, "not_dermoscopy": None})
    plain = Scored(np.zeros(2), {"unlike_training": False, "not_dermoscopy": False})
    window.add([flagged, flagged], now=1_000.0)
    window.add([plain, plain, plain], now=2_000.0)
    assert len(window.predictions) == 4
    assert window.flagged_share("unlike_training") == 0.25
    assert window.flagged_share("not_dermoscopy") == 0.0  # judged for the three that say
    day = window.summary()["last_day"]
    assert day["predictions"] == 5
    assert day["flagged_share"] == {"unlike_training": 0.4, "not_dermoscopy": 0.0}
    # A day later, the first hour is gone from the last day's counts.
    window.add([plain], now=1_000.0 + 86_400.0 + 3_600.0)
    assert window.summary()["last_day"]["predictions"] == 1


def test_the_monitor_exports_drift_once_the_window_has_enough_predictions() -> None:
    version = f"v-{uuid.uuid4().hex[:6]}"
    monitor = DriftMonitor(lambda _version: points(500, seed=1), window=300, clock=lambda: 1_000.0)
    monitor.ingest(event_body(version, points(MIN_WINDOW - 1, shift=2.0, seed=4), unlike=True))
    assert sample_value(INPUT_DRIFT, version) is None
    assert sample_value(INPUT_DRIFT_WINDOW, version) == MIN_WINDOW - 1
    assert sample_value(INPUT_FLAGGED_SHARE, version, "unlike_training") == 1.0
    monitor.ingest(event_body(version, points(1, shift=2.0, seed=5), photo=None))
    assert sample_value(INPUT_DRIFT, version) > 0.5
    assert sample_value(INPUT_FLAGGED_SHARE, version, "not_dermoscopy") == 0.0
    record = json.loads(json.dumps(monitor.record()))
    summary = record["versions"][version]
    assert summary["window"]["predictions"] == MIN_WINDOW
    assert summary["window"]["drift"] == pytest.approx(sample_value(INPUT_DRIFT, version), abs=1e-4)
    assert summary["last_day"]["drift_max"] == summary["window"]["drift"]
    assert record["threshold"] > 0 and record["window_size"] == 300


def test_the_monitor_forgets_a_version_not_served_for_a_day() -> None:
    now = [1_000.0]
    old, new = f"old-{uuid.uuid4().hex[:6]}", f"new-{uuid.uuid4().hex[:6]}"
    monitor = DriftMonitor(lambda _version: points(500, seed=1), clock=lambda: now[0])
    monitor.ingest(event_body(old, points(MIN_WINDOW, seed=6)))
    assert sample_value(INPUT_DRIFT, old) is not None
    now[0] += 86_400.0 + 1
    monitor.ingest(event_body(new, points(3, seed=7)))
    assert set(monitor.record()["versions"]) == {new}
    assert sample_value(INPUT_DRIFT, old) is None and sample_value(INPUT_DRIFT_WINDOW, old) is None


def test_a_version_without_a_reference_counts_warnings_and_has_no_drift() -> None:
    version = f"v-{uuid.uuid4().hex[:6]}"
    monitor = DriftMonitor(lambda _version: None)
    monitor.ingest(event_body(version, points(MIN_WINDOW, seed=8), unlike=True))
    assert sample_value(INPUT_DRIFT, version) is None
    assert monitor.record()["versions"][version]["window"]["flagged_share"]["unlike_training"] == 1.0


@pytest.mark.parametrize(
    "data",
    [{"predictions": []}, {"model_version": "v", "predictions": "none"}, {"model_version": 3, "predictions": []}],
)
def test_an_event_without_a_version_or_predictions_is_refused(data: dict) -> None:
    body = Event(name=EVENT_PREDICTIONS_SCORED, event_id="e", occurred_at=0.0, data=data).encode()
    with pytest.raises(MessageDecodeError):
        DriftMonitor(lambda _version: None).ingest(body)


def test_a_reference_that_cannot_be_loaded_is_tried_again_after_a_while() -> None:
    version, now, calls = f"v-{uuid.uuid4().hex[:6]}", [1_000.0], []

    def flaky_loader(_version: str) -> np.ndarray:
        calls.append(now[0])
        if len(calls) == 1:
            raise StorageUnavailable("the store is away")
        return points(500, seed=1)

    monitor = DriftMonitor(flaky_loader, clock=lambda: now[0])
    monitor.ingest(event_body(version, points(MIN_WINDOW, seed=9)))
    now[0] += RELOAD_AFTER_S / 2
    monitor.ingest(event_body(version, points(1, seed=10)))
    assert sample_value(INPUT_DRIFT, version) is None and len(calls) == 1, "not hammering the store"
    now[0] += RELOAD_AFTER_S
    monitor.ingest(event_body(version, points(1, seed=11)))
    assert sample_value(INPUT_DRIFT, version) is not None and len(calls) == 2
