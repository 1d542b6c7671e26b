"""A version's readable report: Markdown plus ROC, confusion-matrix and calibration plots."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # no display on servers; must precede pyplot's import
import matplotlib.pyplot as plt

PLOTS = {"roc": "roc.png", "confusion": "confusion.png", "calibration": "calibration.png"}


def write_report(folder: Path, card: dict[str, Any], *, split: str = "test") -> dict[str, Path]:
    """Write report.md and the three PNGs for `card["metrics"][split]`; return their paths."""
    folder.mkdir(parents=True, exist_ok=True)
    result = card["metrics"][split]
    paths = {name: folder / filename for name, filename in PLOTS.items()}
    _roc_plot(result, paths["roc"])
    _confusion_plot(result, paths["confusion"])
    _calibration_plot(result, paths["calibration"])
    paths["report"] = folder / "report.md"
    paths["report"].write_text(markdown(card, split=split))
    return paths


def markdown(card: dict[str, Any], *, split: str = "test") -> str:
    result = card["metrics"][split]
    low, high = result["auc_ci95"]
    c = result["confusion_matrix"]
    rows = [
        ("ROC AUC (95% bootstrap CI)", f"{result['auc']:.3f} ({low:.3f}-{high:.3f})"),
        ("threshold (calibrated probability)", f"{result['threshold']:.3f}"),
        ("sensitivity", f"{result['sensitivity']:.3f}"),
        ("specificity", f"{result['specificity']:.3f}"),
        ("balanced accuracy", f"{result['balanced_accuracy']:.3f}"),
        ("precision", f"{result['precision']:.3f}"),
        ("F1", f"{result['f1']:.3f}"),
        ("Brier score", f"{result['brier']:.4f}"),
        ("expected calibration error (10 bins)", f"{result['ece']:.4f}"),
    ]
    validation = card["metrics"].get("validation") or {}
    data = card.get("data", {})
    lines = [
        f"# Model {card['version']}",
        "",
        f"> {card['note']}",
        "",
        f"Evaluated on `{split}`: {result['n']} images, {result['n_malignant']} malignant.",
        "",
        "| metric | value |",
        "|---|---|",
        *[f"| {name} | {value} |" for name, value in rows],
        "",
        "Confusion matrix at the stored threshold:",
        "",
        "| | called benign | called malignant |",
        "|---|---|---|",
        f"| benign | {c['tn']} | {c['fp']} |",
        f"| malignant | {c['fn']} | {c['tp']} |",
        "",
        f"Validation AUC {validation.get('auc', float('nan')):.3f}; threshold chosen on validation for sensitivity "
        f">= {card.get('target_sensitivity')} (with a margin); Platt calibration "
        f"a={card['calibration']['a']:.3f}, b={card['calibration']['b']:.3f}.",
        "",
        "## Data",
        "",
        "| split | source | images | malignant | content hash |",
        "|---|---|---|---|---|",
        *[
            f"| {name} | {d['source']} | {d['n']} | {d['n_malignant']} | `{d['content_hash'][:12]}` |"
            for name, d in data.items()
        ],
        "",
        "## Plots",
        "",
        *[f"![{name}]({filename})" for name, filename in PLOTS.items()],
        "",
    ]
    return "\n".join(lines)


def _roc_plot(result: dict[str, Any], path: Path) -> None:
    figure, axes = plt.subplots(figsize=(4.5, 4.5))
    axes.plot(result["roc_curve"]["fpr"], result["roc_curve"]["tpr"], label=f"AUC {result['auc']:.3f}")
    axes.plot([0, 1], [0, 1], linestyle=":", color="grey")
    axes.scatter([1 - result["specificity"]], [result["sensitivity"]], color="red", zorder=3, label="threshold")
    axes.set(xlabel="1 - specificity", ylabel="sensitivity", title="ROC")
    axes.legend(loc="lower right")
    _save(figure, path)


def _confusion_plot(result: dict[str, Any], path: Path) -> None:
    c = result["confusion_matrix"]
    cells = [[c["tn"], c["fp"]], [c["fn"], c["tp"]]]
    figure, axes = plt.subplots(figsize=(4, 3.6))
    axes.imshow(cells, cmap="Blues")
    for row in range(2):
        for column in range(2):
            axes.text(column, row, str(cells[row][column]), ha="center", va="center", fontsize=14)
    axes.set(
        xticks=[0, 1],
        yticks=[0, 1],
        xticklabels=["benign", "malignant"],
        yticklabels=["benign", "malignant"],
        xlabel="called",
        ylabel="true",
        title="Confusion matrix",
    )
    _save(figure, path)


def _calibration_plot(result: dict[str, Any], path: Path) -> None:
    bins = result["reliability"]
    figure, axes = plt.subplots(figsize=(4.5, 4.5))
    axes.plot([0, 1], [0, 1], linestyle=":", color="grey")
    axes.plot(
        [b["mean_score"] for b in bins], [b["observed"] for b in bins], marker="o", label=f"ECE {result['ece']:.3f}"
    )
    axes.set(
        xlabel="mean calibrated probability",
        ylabel="observed malignant rate",
        title="Calibration",
        xlim=(0, 1),
        ylim=(0, 1),
    )
    axes.legend(loc="upper left")
    _save(figure, path)


def _save(figure: plt.Figure, path: Path) -> None:
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
