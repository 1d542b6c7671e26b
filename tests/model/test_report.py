"""A version's report.md: the in-domain evaluation, and beside it the external collection's
(another clinic's images) when the card has one, "not measured" when it has not."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from shared.model.evaluation import metrics
from shared.model.report import PLOTS, markdown, write_report


def evaluation(seed: int, n: int, separation: float) -> dict[str, Any]:
    """Metrics of calibrated-looking scores on `n` images, at the threshold 0.5."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 4 == 0
    scores = np.clip(0.3 + separation * labels + rng.normal(0, 0.15, n), 0, 1)
    return metrics(labels, scores, 0.5, bootstrap_rounds=50)


def data_entry(source: str, result: dict[str, Any], **extra: str) -> dict[str, Any]:
    return {"source": source, "n": result["n"], "n_malignant": result["n_malignant"], "content_hash": "a" * 64, **extra}


def card(*, external: bool) -> dict[str, Any]:
    test = evaluation(1, 80, separation=0.4)
    made = {
        "version": "v1",
        "note": "Research and teaching tool only.",
        "threshold": 0.5,
        "target_sensitivity": 0.9,
        "calibration": {"a": 1.0, "b": 0.0},
        "metrics": {"validation": evaluation(2, 40, separation=0.4), "test": test},
        "data": {"test": data_entry("/data/ham10000/test", test)},
    }
    if external:
        outside = evaluation(3, 60, separation=0.2)
        made["metrics"]["external"] = outside
        made["data"]["external"] = data_entry("/data/derm7pt", outside, name="Derm7pt")
    return made


def section(text: str, title: str) -> str:
    """The Markdown from the heading that starts with `title` to the next heading of its level."""
    start = text.index(f"\n{title}")
    end = text.find("\n## ", start + 1)
    return text[start : end if end >= 0 else None]


def table_row(text: str, label: str) -> list[str]:
    """The cells after the label of the Markdown table row that starts with `label`."""
    line = next(line for line in text.splitlines() if line.startswith(f"| {label} |"))
    return [cell.strip() for cell in line.strip("|").split("|")][1:]


def test_the_report_sets_the_external_collection_beside_the_test_split() -> None:
    made = card(external=True)
    test, outside = made["metrics"]["test"], made["metrics"]["external"]
    text = markdown(made)
    comparison = section(text, "## In-domain test and external collection (Derm7pt)")

    assert f"another clinic's collection of {outside['n']} images, {outside['n_malignant']} malignant" in comparison
    assert "never trained on it" in comparison and "stored threshold 0.500" in comparison
    assert table_row(comparison, "metric") == ["test (in-domain)", "Derm7pt (external)"]
    low, high = outside["auc_ci95"]
    assert table_row(comparison, "ROC AUC (95% bootstrap CI)")[1] == f"{outside['auc']:.3f} ({low:.3f}-{high:.3f})"
    assert table_row(comparison, "sensitivity") == [f"{test['sensitivity']:.3f}", f"{outside['sensitivity']:.3f}"]
    assert table_row(comparison, "specificity")[1] == f"{outside['specificity']:.3f}"
    assert table_row(comparison, "balanced accuracy")[1] == f"{outside['balanced_accuracy']:.3f}"
    assert table_row(comparison, "expected calibration error (10 bins)")[1] == f"{outside['ece']:.4f}"
    inside_matrix, matrix = test["confusion_matrix"], outside["confusion_matrix"]
    assert table_row(comparison, "malignant called benign (FN)") == [str(inside_matrix["fn"]), str(matrix["fn"])]
    assert table_row(comparison, "benign called malignant (FP)")[1] == str(matrix["fp"])
    # The data table names the collection.
    data_row = table_row(section(text, "## Data"), "external (Derm7pt)")
    assert data_row[:3] == ["/data/derm7pt", str(outside["n"]), str(outside["n_malignant"])]
    assert "Not measured" not in text


def test_a_card_without_an_external_evaluation_says_it_was_not_measured() -> None:
    made = card(external=False)
    text = markdown(made)
    assert "Not measured: this version was not evaluated on another clinic's images." in section(
        text, "## External collection"
    )
    assert "Derm7pt" not in text and "(external)" not in text
    # The in-domain table is there as always.
    assert table_row(text, "sensitivity") == [f"{made['metrics']['test']['sensitivity']:.3f}"]


def test_write_report_draws_the_plots_with_and_without_an_external_collection(tmp_path: Path) -> None:
    for external in (True, False):
        folder = tmp_path / str(external)
        paths = write_report(folder, card(external=external))
        assert sorted(path.name for path in folder.iterdir()) == sorted([*PLOTS.values(), "report.md"])
        assert all(paths[name].stat().st_size > 1000 for name in PLOTS)
        assert ("(Derm7pt)" in paths["report"].read_text()) is external


def test_the_report_says_how_the_threshold_was_chosen() -> None:
    made = card(external=True)
    assert "threshold chosen for sensitivity >= 0.9 on validation" in markdown(made)
    made["threshold_rule"] = {
        "validation_target": 0.9,
        "validation_threshold": 0.2,
        "external_target": 0.85,
        "external_threshold": 0.15,
        "chosen_by": "external",
    }
    text = markdown(made)
    assert "0.200 and 0.150, so the external collection decided" in text
    assert "kept low enough to reach its sensitivity target on it as well" in text


def test_the_report_lists_each_collections_domain_warnings_when_the_card_has_them() -> None:
    made = card(external=False)
    assert "Out-of-domain" not in markdown(made)
    made["domain"] = {"not_dermoscopy": {"far_score": 2.0, "detector": {"photographs_source": "photos: 10 of 20"}}}
    made["metrics"]["collections"] = {
        "clinic": {
            **made["metrics"]["test"],
            "external": False,
            "threshold_collection": None,
            "domain": {"n": 80, "unlike_training": 0.025, "not_dermoscopy": 0.0, "median_score": 0.5},
        }
    }
    report = markdown(made)
    assert "## Out-of-domain warnings" in report and "photos: 10 of 20" in report
    assert "| clinic | 80 | 2.5% | 0.0% | 0.50 |" in report
