"""The promotion gate: is the candidate at least as good as production on every collection's
held-out part (external collections included), measured on the same images?"""

from __future__ import annotations

from typing import Any

GATE_METRICS = (
    "n",
    "n_malignant",
    "auc",
    "auc_ci95",
    "sensitivity",
    "specificity",
    "balanced_accuracy",
    "ece",
    "threshold",
)


def metric_summary(metrics: dict[str, Any] | None) -> dict[str, Any] | None:
    return None if metrics is None else {name: metrics.get(name) for name in GATE_METRICS}


def decide(
    candidate: dict[str, Any],
    production: dict[str, Any] | None,
    *,
    production_version: str | None,
    auc_tolerance: float,
    sensitivity_tolerance: float,
    min_malignant: int,
) -> dict[str, Any]:
    """Gate decision with its reasons. `candidate` and `production` are
    `card.evaluate_collections` results on the same collections.

    Passes when, on every collection's held-out part with at least `min_malignant` cases of
    each class, candidate AUC >= production AUC - `auc_tolerance`, and on the trained-on
    collections' held-out parts pooled, the same holds for AUC and candidate sensitivity at
    the global threshold >= production's - `sensitivity_tolerance`. A model that gains on one collection and loses on
    another is rejected. Smaller collections are reported, not judged: their AUC moves by
    more than the tolerance by chance. Sensitivity is not compared per collection: each
    collection's threshold is its own model's choice, and the pooled figure is the steadier one.
    """
    reasons: list[str] = []
    collections: dict[str, Any] = {}
    passed = True
    if production is None:
        reasons.append("no production model to compare with: the candidate becomes the first")
    for name, ours in candidate["collections"].items():
        theirs = (production or {}).get("collections", {}).get(name)
        judged = theirs is not None and min(ours["n_malignant"], ours["n"] - ours["n_malignant"]) >= min_malignant
        entry = {
            "external": ours.get("external", False),
            "judged": judged,
            "candidate": metric_summary(ours),
            "production": metric_summary(theirs),
        }
        if judged:
            auc_ok = ours["auc"] >= theirs["auc"] - auc_tolerance
            entry["passed"] = auc_ok
            passed = passed and auc_ok
            reasons.append(
                f"{name}: AUC {ours['auc']:.4f} {'>=' if auc_ok else '<'} production {theirs['auc']:.4f}"
                f" - tolerance {auc_tolerance}"
            )
        elif production is not None:
            reasons.append(f"{name}: reported, not judged ({_why_not_judged(ours, theirs, min_malignant)})")
        collections[name] = entry
    ours_pooled, theirs_pooled = candidate.get("test"), (production or {}).get("test")
    if production is not None and ours_pooled is not None and theirs_pooled is not None:
        # Pooled, the held-out parts are judged even when no collection is large enough alone.
        if ours_pooled["auc"] is not None and theirs_pooled["auc"] is not None:
            auc_ok = ours_pooled["auc"] >= theirs_pooled["auc"] - auc_tolerance
            passed = passed and auc_ok
            reasons.append(
                f"held-out parts pooled: AUC {ours_pooled['auc']:.4f} {'>=' if auc_ok else '<'} production"
                f" {theirs_pooled['auc']:.4f} - tolerance {auc_tolerance}"
            )
        sensitivity_ok = ours_pooled["sensitivity"] >= theirs_pooled["sensitivity"] - sensitivity_tolerance
        passed = passed and sensitivity_ok
        reasons.append(
            f"held-out parts pooled: sensitivity {ours_pooled['sensitivity']:.4f} {'>=' if sensitivity_ok else '<'}"
            f" production {theirs_pooled['sensitivity']:.4f} - tolerance {sensitivity_tolerance}"
        )
    return {
        "passed": passed,
        "reasons": reasons,
        "collections": collections,
        "candidate": metric_summary(ours_pooled),
        "production": metric_summary(theirs_pooled),
        "external_candidate": metric_summary(candidate.get("external")),
        "external_production": metric_summary((production or {}).get("external")),
        "production_version": production_version,
        "auc_tolerance": auc_tolerance,
        "sensitivity_tolerance": sensitivity_tolerance,
        "min_malignant": min_malignant,
    }


def _why_not_judged(ours: dict[str, Any], theirs: dict[str, Any] | None, min_malignant: int) -> str:
    if theirs is None:
        return "production has no figures for it"
    if ours["n_malignant"] < min_malignant:
        return f"{ours['n_malignant']} malignant < {min_malignant}"
    return f"{ours['n'] - ours['n_malignant']} benign < {min_malignant}"
