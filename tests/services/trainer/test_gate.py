"""The promotion gate, table-driven."""

from __future__ import annotations

import pytest

from services.trainer.gate import decide


def scores(auc: float, sensitivity: float) -> dict[str, float]:
    return {"n": 100, "auc": auc, "sensitivity": sensitivity, "specificity": 0.8, "balanced_accuracy": 0.8}


CASES = [
    # candidate (auc, sens), production (auc, sens), passes
    ((0.95, 0.91), (0.94, 0.90), True),
    ((0.94, 0.90), (0.94, 0.90), True),
    ((0.937, 0.90), (0.94, 0.90), True),  # within the AUC tolerance of 0.005
    ((0.934, 0.95), (0.94, 0.90), False),  # AUC too far below
    ((0.96, 0.89), (0.94, 0.90), False),  # sensitivity lower
]


@pytest.mark.parametrize(("candidate", "production", "passes"), CASES)
def test_the_gate_compares_auc_with_tolerance_and_sensitivity_strictly(
    candidate: tuple[float, float], production: tuple[float, float], passes: bool
) -> None:
    decision = decide(
        scores(*candidate),
        scores(*production),
        production_version="v1",
        auc_tolerance=0.005,
        sensitivity_tolerance=0.0,
    )
    assert decision["passed"] is passes
    assert len(decision["reasons"]) == 2
    assert decision["candidate"]["auc"] == candidate[0]
    assert decision["production_version"] == "v1"


def test_without_production_the_first_candidate_passes() -> None:
    decision = decide(scores(0.6, 0.5), None, production_version=None, auc_tolerance=0.0, sensitivity_tolerance=0.0)
    assert decision["passed"] is True
    assert decision["production"] is None
    assert "first" in decision["reasons"][0]


def decide_with_external(
    candidate_external: tuple[float, float] | None, production_external: tuple[float, float] | None
) -> dict:
    """Candidate and production equal on test; the external split decides."""
    return decide(
        scores(0.94, 0.90),
        scores(0.94, 0.90),
        production_version="v1",
        auc_tolerance=0.005,
        sensitivity_tolerance=0.0,
        candidate_external=scores(*candidate_external) if candidate_external else None,
        production_external=scores(*production_external) if production_external else None,
    )


@pytest.mark.parametrize(
    ("candidate_external", "passes", "failed_reason"),
    [
        ((0.80, 0.85), True, None),
        ((0.78, 0.85), False, "external AUC 0.7800 < production 0.8000"),  # gains nothing on test, loses 0.02
        # The candidate's threshold was moved on this split: its sensitivity there is not compared.
        ((0.82, 0.70), True, None),
    ],
)
def test_with_an_external_split_the_gate_compares_auc_there_too(
    candidate_external: tuple[float, float], passes: bool, failed_reason: str | None
) -> None:
    decision = decide_with_external(candidate_external, (0.80, 0.85))
    assert decision["passed"] is passes
    assert [reason.split(" ", 2)[:2] for reason in decision["reasons"]] == [
        ["test", "AUC"],
        ["test", "sensitivity"],
        ["external", "AUC"],
        ["external", "sensitivity"],
    ]
    assert decision["reasons"][-1] == (
        "external sensitivity not compared: the candidate's threshold was chosen on this split"
    )
    if failed_reason:
        assert any(reason.startswith(failed_reason) for reason in decision["reasons"]), decision["reasons"]
    assert decision["external_candidate"]["auc"] == candidate_external[0]
    assert decision["external_production"]["sensitivity"] == 0.85


def test_a_candidate_better_on_test_but_worse_on_the_external_split_is_rejected() -> None:
    decision = decide(
        scores(0.97, 0.95),
        scores(0.94, 0.90),
        production_version="v1",
        auc_tolerance=0.005,
        sensitivity_tolerance=0.0,
        candidate_external=scores(0.70, 0.80),
        production_external=scores(0.80, 0.85),
    )
    assert decision["passed"] is False
    assert [reason for reason in decision["reasons"] if " < " in reason] == [
        "external AUC 0.7000 < production 0.8000 - tolerance 0.005",
    ]


def test_without_an_external_split_the_decision_is_the_test_split_alone() -> None:
    without = decide(
        scores(0.94, 0.90), scores(0.94, 0.90), production_version="v1", auc_tolerance=0.005, sensitivity_tolerance=0.0
    )
    assert without == decide_with_external(None, None)
    assert without["reasons"] == [
        "AUC 0.9400 >= production 0.9400 - tolerance 0.005",
        "sensitivity 0.9000 >= production 0.9000 - tolerance 0.0",
    ]
    assert without["external_candidate"] is None and without["external_production"] is None
    # An external split the production model was not scored on is recorded, not compared.
    candidate_only = decide_with_external((0.5, 0.5), None)
    assert candidate_only["passed"] is True and len(candidate_only["reasons"]) == 2
    assert candidate_only["external_candidate"]["auc"] == 0.5


def test_the_first_candidate_passes_with_its_external_metrics_recorded() -> None:
    decision = decide(
        scores(0.6, 0.5),
        None,
        production_version=None,
        auc_tolerance=0.0,
        sensitivity_tolerance=0.0,
        candidate_external=scores(0.55, 0.4),
    )
    assert decision["passed"] is True
    assert decision["external_candidate"]["auc"] == 0.55 and decision["external_production"] is None
