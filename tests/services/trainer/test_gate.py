"""The promotion gate, table-driven: every collection with enough cases is judged."""

from __future__ import annotations

import pytest

from services.trainer.gate import decide


def scores(auc: float, sensitivity: float, n_malignant: int = 60, external: bool = False) -> dict:
    return {
        "n": 300,
        "n_malignant": n_malignant,
        "auc": auc,
        "sensitivity": sensitivity,
        "specificity": 0.8,
        "balanced_accuracy": 0.8,
        "external": external,
    }


def evaluated(collections: dict[str, dict], pooled_sensitivity: float = 0.9) -> dict:
    """An `evaluate_collections` result: the collections, and their pooled figures."""
    return {"collections": collections, "test": scores(0.9, pooled_sensitivity), "external": None}


def gate(candidate: dict, production: dict | None) -> dict:
    return decide(
        candidate,
        production,
        production_version="v1" if production else None,
        auc_tolerance=0.005,
        sensitivity_tolerance=0.0,
        min_malignant=30,
    )


CASES = [
    # candidate AUC on (home, clinic), production AUC on (home, clinic), passes
    ((0.95, 0.80), (0.94, 0.70), True),
    ((0.94, 0.70), (0.94, 0.70), True),
    ((0.937, 0.70), (0.94, 0.70), True),  # within the AUC tolerance of 0.005
    ((0.96, 0.694), (0.94, 0.70), False),  # better at home, worse at the clinic
    ((0.934, 0.90), (0.94, 0.70), False),  # much better at the clinic, worse at home
]


@pytest.mark.parametrize(("candidate", "production", "passes"), CASES)
def test_every_judged_collection_must_keep_its_auc_within_the_tolerance(
    candidate: tuple[float, float], production: tuple[float, float], passes: bool
) -> None:
    decision = gate(
        evaluated({"home": scores(candidate[0], 0.9), "clinic": scores(candidate[1], 0.9)}),
        evaluated({"home": scores(production[0], 0.9), "clinic": scores(production[1], 0.9)}),
    )
    assert decision["passed"] is passes
    assert decision["collections"]["clinic"]["candidate"]["auc"] == candidate[1]
    assert all(entry["judged"] for entry in decision["collections"].values())
    assert decision["production_version"] == "v1"


def test_a_lower_pooled_sensitivity_is_rejected_even_when_every_auc_holds() -> None:
    decision = gate(
        evaluated({"home": scores(0.95, 0.9)}, pooled_sensitivity=0.89),
        evaluated({"home": scores(0.94, 0.9)}, pooled_sensitivity=0.90),
    )
    assert decision["passed"] is False and "sensitivity" in decision["reasons"][-1]


def test_a_collection_with_too_few_malignant_cases_is_reported_but_not_judged() -> None:
    decision = gate(
        evaluated({"home": scores(0.95, 0.9), "tiny": scores(0.50, 0.5, n_malignant=12)}),
        evaluated({"home": scores(0.94, 0.9), "tiny": scores(0.90, 0.9, n_malignant=12)}),
    )
    assert decision["passed"] is True
    tiny = decision["collections"]["tiny"]
    assert tiny["judged"] is False and "passed" not in tiny and tiny["candidate"]["auc"] == 0.50
    assert any(reason == "tiny: reported, not judged (12 malignant < 30)" for reason in decision["reasons"])


def test_an_external_collection_is_judged_like_the_others() -> None:
    decision = gate(
        evaluated({"home": scores(0.95, 0.9), "derm7pt": scores(0.78, 0.8, external=True)}),
        evaluated({"home": scores(0.94, 0.9), "derm7pt": scores(0.80, 0.8, external=True)}),
    )
    assert decision["passed"] is False
    assert decision["collections"]["derm7pt"] | {} == decision["collections"]["derm7pt"]
    assert decision["collections"]["derm7pt"]["external"] is True
    assert decision["collections"]["derm7pt"]["passed"] is False


def test_a_collection_production_never_saw_is_reported_not_judged() -> None:
    decision = gate(
        evaluated({"home": scores(0.95, 0.9), "new-clinic": scores(0.6, 0.9)}),
        evaluated({"home": scores(0.94, 0.9)}),
    )
    assert decision["passed"] is True
    assert decision["collections"]["new-clinic"]["judged"] is False
    assert decision["collections"]["new-clinic"]["production"] is None


def test_without_production_the_first_candidate_passes_with_its_figures_recorded() -> None:
    decision = gate(evaluated({"home": scores(0.6, 0.5)}), None)
    assert decision["passed"] is True
    assert decision["production"] is None and decision["candidate"]["sensitivity"] == 0.9
    assert decision["collections"]["home"]["candidate"]["auc"] == 0.6
    assert "first" in decision["reasons"][0]


def test_when_no_collection_is_large_enough_the_pooled_held_out_parts_are_still_judged() -> None:
    small = {"home": scores(0.95, 0.9, n_malignant=8)}
    worse = {**evaluated(small), "test": scores(0.5, 0.9)}
    decision = gate(worse, {**evaluated({"home": scores(1.0, 0.9, n_malignant=8)}), "test": scores(1.0, 0.9)})
    assert decision["passed"] is False and not decision["collections"]["home"]["judged"]
    assert "held-out parts pooled: AUC 0.5000 < production 1.0000" in decision["reasons"][1]


def test_a_collection_with_too_few_benign_cases_is_not_judged_either() -> None:
    lopsided = {**scores(0.4, 0.9, n_malignant=290)}
    decision = gate(evaluated({"home": lopsided}), evaluated({"home": scores(0.9, 0.9, n_malignant=290)}))
    assert decision["collections"]["home"]["judged"] is False
    assert "home: reported, not judged (10 benign < 30)" in decision["reasons"]
