"""Metrics, threshold choice and Platt calibration against hand-computed values."""

from __future__ import annotations

import numpy as np
import pytest

from shared.model.evaluation import (
    bootstrap_auc_interval,
    choose_threshold,
    expected_calibration_error,
    fit_platt,
    metrics,
    roc_auc,
    roc_curve,
)
from shared.serving.runtime import calibrate

# Eight cases: one malignant (0.35) scores below one benign (0.4): 15 of 16 pairs are ordered.
LABELS = np.array([0, 0, 0, 1, 0, 1, 1, 1])
SCORES = np.array([0.1, 0.2, 0.3, 0.35, 0.4, 0.6, 0.7, 0.9])


@pytest.mark.parametrize(
    ("labels", "scores", "expected"),
    [
        (LABELS, SCORES, 15 / 16),
        ([0, 1], [0.5, 0.5], 0.5),  # a tie counts half
        ([0, 0, 1, 1], [0.2, 0.5, 0.5, 0.8], 3.5 / 4),
        ([1, 0], [0.1, 0.9], 0.0),
    ],
)
def test_roc_auc_counts_ordered_pairs_with_ties_as_half(labels, scores, expected):
    assert roc_auc(np.array(labels), np.array(scores)) == pytest.approx(expected)


def test_weighted_roc_auc_draws_cases_in_proportion_to_their_weight():
    labels, scores = np.array([0, 0, 1]), np.array([0.1, 0.9, 0.5])
    # The malignant case beats the benign one of weight 3 and loses to the one of weight 1.
    assert roc_auc(labels, scores, np.array([3.0, 1.0, 1.0])) == pytest.approx(3 / 4)
    # A weight of 2 is the same as the case appearing twice.
    doubled = roc_auc(np.array([0, 0, 0, 1, 1]), np.array([0.3, 0.3, 0.6, 0.5, 0.5]))
    weighted = roc_auc(np.array([0, 0, 1]), np.array([0.3, 0.6, 0.5]), np.array([2.0, 1.0, 2.0]))
    assert weighted == pytest.approx(doubled)


def test_metrics_at_a_threshold_match_the_hand_computed_values():
    result = metrics(LABELS, SCORES, 0.5, bootstrap_rounds=200)
    assert result["confusion_matrix"] == {"tp": 3, "fn": 1, "tn": 4, "fp": 0}
    expected = {
        "n": 8,
        "auc": 15 / 16,
        "sensitivity": 0.75,
        "specificity": 1.0,
        "balanced_accuracy": 0.875,
        "precision": 1.0,
        "f1": 2 * 0.75 / 1.75,
        "accuracy": 7 / 8,
        "brier": 0.9825 / 8,
        # Bins 1, 2, 4, 6, 7, 9 hold one case each; bin 3 holds 0.3 (benign) and 0.35 (malignant).
        "ece": (0.1 + 0.2 + 0.4 + 0.4 + 0.3 + 0.1) / 8 + abs(0.5 - 0.325) * 2 / 8,
    }
    for key, value in expected.items():
        assert result[key] == pytest.approx(value), key


def test_expected_calibration_error_is_zero_when_rates_match_scores():
    labels = np.array([0, 0, 0, 1] * 5 + [1, 1, 1, 0] * 5)
    scores = np.array([0.25] * 20 + [0.75] * 20)
    assert expected_calibration_error(labels, scores) == pytest.approx(0.0)


def test_roc_curve_runs_from_origin_to_the_corner():
    curve = roc_curve(LABELS, SCORES)
    assert (curve["fpr"][0], curve["tpr"][0]) == (0.0, 0.0)
    assert (curve["fpr"][-1], curve["tpr"][-1]) == (1.0, 1.0)


def test_bootstrap_interval_brackets_the_auc():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 300)
    scores = labels * 0.5 + rng.random(300)
    low, high = bootstrap_auc_interval(labels, scores, rounds=300)
    assert low < roc_auc(labels, scores) < high


@pytest.mark.parametrize(("z", "expected"), [(0.0, 0.2), (1.0, 0.1)])
def test_threshold_keeps_the_target_sensitivity_with_the_asked_margin(z, expected):
    # Ten malignant cases scored 0.1 .. 1.0: 90% sensitivity needs the 9th highest (0.2);
    # the one-sigma Wilson margin asks for all ten.
    labels = np.array([1] * 10 + [0] * 5)
    scores = np.concatenate([np.linspace(0.1, 1.0, 10), np.full(5, 0.05)])
    assert choose_threshold(labels, scores, 0.9, z=z) == pytest.approx(expected)


@pytest.mark.parametrize(("a", "b"), [(1.0, 0.0), (0.5, -1.0), (2.0, 0.5)])
def test_platt_scaling_recovers_the_mapping_that_generated_the_labels(a, b):
    rng = np.random.default_rng(7)
    raw = rng.uniform(0.01, 0.99, 20_000)
    truth = calibrate(raw, {"method": "platt", "a": a, "b": b})
    labels = (rng.random(raw.size) < truth).astype(int)
    fitted = fit_platt(labels, raw)
    assert fitted["a"] == pytest.approx(a, abs=0.1)
    assert fitted["b"] == pytest.approx(b, abs=0.1)


def test_with_a_floor_the_target_is_asked_on_average_and_the_floor_with_the_margin():
    # 50 malignant cases scored 0.02 .. 1.0. The margin on 0.90 itself asks for 48 of 50
    # (threshold 0.06); 0.90 with a lower bound of 0.85 takes 46 (0.10): 45 would reach 0.90
    # but its bound only 0.849.
    labels = np.array([1] * 50 + [0] * 5)
    scores = np.concatenate([np.linspace(0.02, 1.0, 50), np.full(5, 0.01)])
    assert choose_threshold(labels, scores, 0.9) == pytest.approx(0.06)
    assert choose_threshold(labels, scores, 0.9, floor=0.85) == pytest.approx(0.10)
