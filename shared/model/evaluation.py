"""Metrics of a binary classifier, the operating threshold and Platt calibration (numpy only).

Conventions: `labels` are 0 (benign) / 1 (malignant), `scores` are probabilities of
malignant, and a case is called malignant when its score is >= the threshold.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def roc_auc(labels: np.ndarray, scores: np.ndarray, weights: np.ndarray | None = None) -> float:
    """Area under the ROC curve: the probability that a random malignant case outscores a
    random benign one, ties counting half (Mann-Whitney U).

    With `weights`, cases are drawn in proportion to their weight instead of uniformly, e.g.
    to give every diagnosis within a class the same say.
    """
    labels = np.asarray(labels).astype(bool)
    weights = np.ones(len(labels)) if weights is None else np.asarray(weights, np.float64)
    positive_total, negative_total = weights[labels].sum(), weights[~labels].sum()
    if not labels.any() or labels.all():
        raise ValueError("ROC AUC needs both classes")
    distinct, group = np.unique(np.asarray(scores), return_inverse=True)
    negatives_at = np.bincount(group, weights=np.where(labels, 0.0, weights), minlength=len(distinct))
    negatives_below = np.cumsum(negatives_at) - negatives_at
    wins = negatives_below[group] + 0.5 * negatives_at[group]  # benign weight each case outscores
    return float(np.sum(weights[labels] * wins[labels]) / (positive_total * negative_total))


# A collection's validation AUC joins the mean only with this many cases of each class.
MIN_CASES_FOR_AUC = 10


def mean_auc_by_collection(labels: np.ndarray, scores: np.ndarray, collections: dict[str, np.ndarray]) -> float:
    """The mean of each collection's own ROC AUC (`collections`: name -> indices), so that a
    model is chosen for how it ranks within every collection, not for the largest one or for
    telling collections apart; collections with fewer than MIN_CASES_FOR_AUC of a class sit
    out. The pooled AUC when no collection qualifies."""
    labels = np.asarray(labels).astype(bool)
    aucs = [
        roc_auc(labels[members], scores[members])
        for members in collections.values()
        if min(labels[members].sum(), (~labels[members]).sum()) >= MIN_CASES_FOR_AUC
    ]
    return float(np.mean(aucs)) if aucs else roc_auc(labels, scores)


def roc_curve(labels: np.ndarray, scores: np.ndarray) -> dict[str, list[float]]:
    """ROC points at every distinct threshold, from (0, 0) to (1, 1)."""
    labels = np.asarray(labels).astype(bool)
    thresholds = np.unique(scores)[::-1]
    tpr = [float(np.mean(scores[labels] >= t)) for t in thresholds]
    fpr = [float(np.mean(scores[~labels] >= t)) for t in thresholds]
    return {"fpr": [0.0, *fpr], "tpr": [0.0, *tpr], "thresholds": [float("inf"), *map(float, thresholds)]}


def bootstrap_auc_interval(
    labels: np.ndarray, scores: np.ndarray, *, rounds: int = 2000, seed: int = 0, level: float = 0.95
) -> tuple[float, float]:
    """Percentile bootstrap interval of the ROC AUC; resampling within each class keeps
    the class balance of the evaluated set."""
    labels = np.asarray(labels).astype(bool)
    rng = np.random.default_rng(seed)
    positive, negative = np.flatnonzero(labels), np.flatnonzero(~labels)
    values = []
    for _ in range(rounds):
        sample = np.concatenate([rng.choice(positive, len(positive)), rng.choice(negative, len(negative))])
        values.append(roc_auc(labels[sample], scores[sample]))
    tail = (1.0 - level) / 2.0 * 100.0
    low, high = np.percentile(values, [tail, 100.0 - tail])
    return float(low), float(high)


def confusion(labels: np.ndarray, scores: np.ndarray, threshold: float) -> dict[str, int]:
    labels = np.asarray(labels).astype(bool)
    called = np.asarray(scores) >= threshold
    return {
        "tp": int(np.sum(called & labels)),
        "fn": int(np.sum(~called & labels)),
        "tn": int(np.sum(~called & ~labels)),
        "fp": int(np.sum(called & ~labels)),
    }


def expected_calibration_error(labels: np.ndarray, scores: np.ndarray, bins: int = 10) -> float:
    """Mean |observed rate - mean score| over equal-width score bins, weighted by bin size."""
    labels, scores = np.asarray(labels, np.float64), np.asarray(scores, np.float64)
    index = np.minimum((scores * bins).astype(int), bins - 1)
    error = 0.0
    for b in range(bins):
        members = index == b
        if members.any():
            error += members.mean() * abs(labels[members].mean() - scores[members].mean())
    return float(error)


def reliability(labels: np.ndarray, scores: np.ndarray, bins: int = 10) -> list[dict[str, float]]:
    """Per-bin mean score, observed malignant rate and count: the calibration plot's data."""
    index = np.minimum((np.asarray(scores) * bins).astype(int), bins - 1)
    return [
        {
            "mean_score": float(scores[index == b].mean()),
            "observed": float(labels[index == b].mean()),
            "count": int((index == b).sum()),
        }
        for b in range(bins)
        if (index == b).any()
    ]


def metrics(
    labels: np.ndarray, scores: np.ndarray, threshold: float, *, bootstrap_rounds: int = 2000
) -> dict[str, Any]:
    """Every number of a model card, for calibrated `scores` at `threshold`; AUC, its interval
    and the ROC curve are None when `labels` hold one class only."""
    labels = np.asarray(labels).astype(int)
    scores = np.asarray(scores, np.float64)
    c = confusion(labels, scores, threshold)
    sensitivity = _ratio(c["tp"], c["tp"] + c["fn"])
    specificity = _ratio(c["tn"], c["tn"] + c["fp"])
    precision = _ratio(c["tp"], c["tp"] + c["fp"])
    # A small collection's held-out part may hold one class only: no AUC, the rest still counts.
    both = 0 < labels.sum() < len(labels)
    return {
        "n": len(labels),
        "n_malignant": int(labels.sum()),
        "auc": roc_auc(labels, scores) if both else None,
        "auc_ci95": list(bootstrap_auc_interval(labels, scores, rounds=bootstrap_rounds)) if both else None,
        "threshold": float(threshold),
        "sensitivity": sensitivity,
        "specificity": specificity,
        "balanced_accuracy": (sensitivity + specificity) / 2.0,
        "precision": precision,
        "f1": _ratio(2 * precision * sensitivity, precision + sensitivity),
        "accuracy": _ratio(c["tp"] + c["tn"], len(labels)),
        "confusion_matrix": c,
        "brier": float(np.mean((scores - labels) ** 2)),
        "ece": expected_calibration_error(labels, scores),
        "reliability": reliability(labels, scores),
        "roc_curve": roc_curve(labels, scores) if both else None,
    }


def _ratio(numerator: float, denominator: float) -> float:
    return float(numerator / denominator) if denominator else 0.0


def choose_threshold(
    labels: np.ndarray, scores: np.ndarray, target_sensitivity: float, *, floor: float | None = None, z: float = 1.0
) -> float:
    """Highest threshold whose sensitivity on (`labels`, `scores`) reaches the target with a
    margin: the Wilson lower bound (z standard errors, one-sided 84% for z=1) must reach the
    target, or with `floor`, the sensitivity itself must reach the target and its lower bound
    the floor.

    Picking the threshold where validation sensitivity just touches the target would hit the
    target on new data only about half the time; the margin makes that the usual case. A
    margin on the target itself costs much specificity on a small validation set (with 50
    malignant cases it moves the threshold to the third-weakest one); a floor asks for the
    target on average and the floor almost always.
    """
    if not 0.0 < target_sensitivity < 1.0:
        raise ValueError(f"target_sensitivity must be in (0, 1), received {target_sensitivity}")
    positives = np.sort(np.asarray(scores)[np.asarray(labels).astype(bool)])[::-1]
    n = len(positives)
    for caught in range(1, n + 1):
        if floor is None:
            reached = _wilson_lower(caught, n, z) >= target_sensitivity
        else:
            reached = caught / n >= target_sensitivity and _wilson_lower(caught, n, z) >= floor
        if reached:
            return float(positives[caught - 1])
    return float(positives[-1])


def _wilson_lower(successes: int, n: int, z: float) -> float:
    p = successes / n
    centre = p + z * z / (2 * n)
    spread = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return float((centre - spread) / (1 + z * z / n))


def fit_platt(labels: np.ndarray, probabilities: np.ndarray, *, iterations: int = 100) -> dict[str, Any]:
    """Fit sigmoid(a * logit(p) + b) to the labels by maximum likelihood (Newton's method).

    The class-weighted training loss over-states malignancy; this maps the raw output back
    to frequencies seen on validation. Same clipping as `serving.calibrate`.
    """
    clipped = np.clip(np.asarray(probabilities, np.float64), 1e-7, 1 - 1e-7)
    x = np.log(clipped / (1 - clipped))
    y = np.asarray(labels, np.float64)
    design = np.stack([x, np.ones_like(x)], axis=1)
    params = np.array([1.0, 0.0])
    for _ in range(iterations):
        fitted = 1.0 / (1.0 + np.exp(-design @ params))
        gradient = design.T @ (fitted - y)
        hessian = design.T @ (design * (fitted * (1 - fitted))[:, None]) + 1e-9 * np.eye(2)
        step = np.linalg.solve(hessian, gradient)
        params -= step
        if np.max(np.abs(step)) < 1e-10:
            break
    return {"method": "platt", "a": float(params[0]), "b": float(params[1])}
