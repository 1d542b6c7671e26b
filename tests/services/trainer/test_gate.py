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
