"""The promotion gate: is the candidate at least as good as production on the same test split?"""

from __future__ import annotations

from typing import Any

GATE_METRICS = ("n", "auc", "auc_ci95", "sensitivity", "specificity", "balanced_accuracy", "ece", "threshold")


def metric_summary(metrics: dict[str, Any] | None) -> dict[str, Any] | None:
    return None if metrics is None else {name: metrics.get(name) for name in GATE_METRICS}


def decide(
    candidate: dict[str, Any],
    production: dict[str, Any] | None,
    *,
    production_version: str | None,
    auc_tolerance: float,
    sensitivity_tolerance: float,
) -> dict[str, Any]:
    """Gate decision with its reasons; both metric sets come from the same test split.

    Passes when candidate AUC >= production AUC - `auc_tolerance` and candidate sensitivity
    (at its own stored threshold) >= production sensitivity - `sensitivity_tolerance`.
    """
    reasons = []
    passed = True
    if production is None:
        reasons.append("no production model to compare with: the candidate becomes the first")
    else:
        auc_floor = production["auc"] - auc_tolerance
        auc_ok = candidate["auc"] >= auc_floor
        reasons.append(
            f"AUC {candidate['auc']:.4f} {'>=' if auc_ok else '<'} production {production['auc']:.4f}"
            f" - tolerance {auc_tolerance}"
        )
        sensitivity_floor = production["sensitivity"] - sensitivity_tolerance
        sensitivity_ok = candidate["sensitivity"] >= sensitivity_floor
        reasons.append(
            f"sensitivity {candidate['sensitivity']:.4f} {'>=' if sensitivity_ok else '<'} production"
            f" {production['sensitivity']:.4f} - tolerance {sensitivity_tolerance}"
        )
        passed = auc_ok and sensitivity_ok
    return {
        "passed": passed,
        "reasons": reasons,
        "candidate": metric_summary(candidate),
        "production": metric_summary(production),
        "production_version": production_version,
        "auc_tolerance": auc_tolerance,
        "sensitivity_tolerance": sensitivity_tolerance,
    }
