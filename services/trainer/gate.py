"""The promotion gate: is the candidate at least as good as production on the same test split,
and, when the store has one, on the external split (another collection, never trained on)?"""

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
    candidate_external: dict[str, Any] | None = None,
    production_external: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Gate decision with its reasons; each pair of metric sets comes from one split.

    Passes when candidate AUC >= production AUC - `auc_tolerance` and candidate sensitivity
    (at its own stored threshold) >= production sensitivity - `sensitivity_tolerance` on the
    test split and, when both external metric sets are given, the AUC check holds on the
    external split too: a model that gains on test and loses on another collection is
    rejected. Sensitivity is not compared there, because the candidate's threshold was moved
    to reach its target on that very split (card.operating_point), which would favour it.
    Reasons name the split only when there are two.
    """
    reasons: list[str] = []
    passed = True
    if production is None:
        reasons.append("no production model to compare with: the candidate becomes the first")
    else:
        compared = [("test", candidate, production)]
        if candidate_external is not None and production_external is not None:
            compared.append(("external", candidate_external, production_external))
        for split, ours, theirs in compared:
            prefix = f"{split} " if len(compared) > 1 else ""
            tolerance = sensitivity_tolerance if split == "test" else None
            split_reasons, split_passed = _compare(ours, theirs, auc_tolerance, tolerance)
            reasons += [prefix + reason for reason in split_reasons]
            passed = passed and split_passed
    return {
        "passed": passed,
        "reasons": reasons,
        "candidate": metric_summary(candidate),
        "production": metric_summary(production),
        "external_candidate": metric_summary(candidate_external),
        "external_production": metric_summary(production_external),
        "production_version": production_version,
        "auc_tolerance": auc_tolerance,
        "sensitivity_tolerance": sensitivity_tolerance,
    }


def _compare(
    candidate: dict[str, Any], production: dict[str, Any], auc_tolerance: float, sensitivity_tolerance: float | None
) -> tuple[list[str], bool]:
    """The checks on one split, sensitivity only with a tolerance: (reasons, passed)."""
    auc_ok = candidate["auc"] >= production["auc"] - auc_tolerance
    reasons = [
        f"AUC {candidate['auc']:.4f} {'>=' if auc_ok else '<'} production {production['auc']:.4f}"
        f" - tolerance {auc_tolerance}"
    ]
    if sensitivity_tolerance is None:
        reasons.append("sensitivity not compared: the candidate's threshold was chosen on this split")
        return reasons, auc_ok
    sensitivity_ok = candidate["sensitivity"] >= production["sensitivity"] - sensitivity_tolerance
    reasons.append(
        f"sensitivity {candidate['sensitivity']:.4f} {'>=' if sensitivity_ok else '<'} production"
        f" {production['sensitivity']:.4f} - tolerance {sensitivity_tolerance}"
    )
    return reasons, auc_ok and sensitivity_ok
