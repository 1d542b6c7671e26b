"""A version's readable report: Markdown plus ROC, confusion-matrix and calibration plots."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # no display on servers; must precede pyplot's import
import matplotlib.pyplot as plt

PLOTS = {"roc": "roc.png", "confusion": "confusion.png", "calibration": "calibration.png"}


def write_report(folder: Path, card: dict[str, Any], *, split: str = "test") -> dict[str, Path]:
    """Write report.md and the three PNGs for `card["metrics"][split]`; return their paths.

    When the card also has external metrics (another clinic's collection), the ROC and
    calibration plots draw them beside the in-domain curves.
    """
    folder.mkdir(parents=True, exist_ok=True)
    result = card["metrics"][split]
    external = _external(card)
    paths = {name: folder / filename for name, filename in PLOTS.items()}
    _roc_plot(result, paths["roc"], split, external)
    _confusion_plot(result, paths["confusion"])
    _calibration_plot(result, paths["calibration"], split, external)
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
        f"Validation AUC {validation.get('auc', float('nan')):.3f}; {_threshold_sentence(card)}; Platt calibration "
        f"(fitted on validation) a={card['calibration']['a']:.3f}, b={card['calibration']['b']:.3f}.",
        "",
        *_external_section(card, split),
        *_collections_section(card),
        *_domain_section(card),
        "## Data",
        "",
        "| split | source | images | malignant | content hash |",
        "|---|---|---|---|---|",
        *[
            f"| {_data_label(name, d)} | {d['source']} | {d['n']} | {d['n_malignant']} | `{d['content_hash'][:12]}` |"
            for name, d in data.items()
            if name != "collections"
        ],
        "",
        "## Plots",
        "",
        *[f"![{name}]({filename})" for name, filename in PLOTS.items()],
        "",
    ]
    return "\n".join(lines)


def _collections_section(card: dict[str, Any]) -> list[str]:
    """A row per collection: its held-out part at the threshold a prediction naming it gets."""
    collections = (card.get("metrics") or {}).get("collections")
    if not collections:
        return []
    rows = []
    for name, result in sorted(collections.items()):
        auc = (
            "- (one class)"
            if result["auc"] is None
            else "{:.3f} ({:.3f}-{:.3f})".format(result["auc"], *result["auc_ci95"])
        )
        kind = "external" if result.get("external") else "held-out part"
        own = "its own" if result.get("threshold_collection") else "global"
        rows.append(
            f"| {name} | {kind} | {result['n']} ({result['n_malignant']}) | {auc}"
            f" | {result['threshold']:.3f} ({own}) | {result['sensitivity']:.3f} | {result['specificity']:.3f} |"
        )
    return [
        "## Every collection",
        "",
        "Each collection's held-out part (external collections whole), never trained on nor used for a"
        " choice, at the threshold a prediction naming the collection gets.",
        "",
        "| collection | part | images (malignant) | ROC AUC (95% CI) | threshold | sensitivity | specificity |",
        "|---|---|---|---|---|---|---|",
        *rows,
        "",
    ]


def _domain_section(card: dict[str, Any]) -> list[str]:
    """How often each domain warning is raised on every collection's held-out part."""
    collections = (card.get("metrics") or {}).get("collections") or {}
    shares = {name: result["domain"] for name, result in sorted(collections.items()) if result.get("domain")}
    if not card.get("domain") or not shares:
        return []
    detector = card["domain"]["not_dermoscopy"].get("detector")
    fitted = f"a detector fitted on {detector['photographs_source']}" if detector else "no photographs"
    return [
        "## Out-of-domain warnings",
        "",
        f"Shares of each held-out part flagged `unlike_training` (score >= 1) and `not_dermoscopy` (score >="
        f" {card['domain']['not_dermoscopy']['far_score']}, or {fitted}); dermoscopy images all, so every"
        " `not_dermoscopy` here is a false warning.",
        "",
        "| collection | images | unlike_training | not_dermoscopy | median score |",
        "|---|---|---|---|---|",
        *[
            f"| {name} | {d['n']} | {d['unlike_training']:.1%} | {d['not_dermoscopy']:.1%} | {d['median_score']:.2f} |"
            for name, d in shares.items()
        ],
        "",
    ]


def _threshold_sentence(card: dict[str, Any]) -> str:
    """How the stored threshold was chosen, from the card's `threshold_rule` when it has one."""
    rule = card.get("threshold_rule") or {}
    in_domain = f"sensitivity >= {card.get('target_sensitivity')} on validation (with a margin)"
    if "collection_thresholds" in rule:
        own = ", ".join(f"{name} {value:.3f}" for name, value in sorted(rule["collection_thresholds"].items()))
        return (
            f"global threshold {rule['validation_threshold']:.3f}: sensitivity >= {rule['validation_target']} on the"
            f" pooled validation images, its lower bound (one standard error) >= {rule['sensitivity_floor']};"
            f" chosen the same way on their own validation images, collections' own: {own or 'none'}"
        )
    if "external_target" not in rule:
        return f"threshold chosen for {in_domain}"
    decided = "validation" if rule.get("chosen_by") == "validation" else "the external collection"
    return (
        f"threshold the lower of the ones reaching {in_domain} and sensitivity >= {rule['external_target']} on the"
        f" external collection (with a margin): {rule['validation_threshold']:.3f} and"
        f" {rule['external_threshold']:.3f}, so {decided} decided"
    )


def _external(card: dict[str, Any]) -> tuple[str, dict[str, Any]] | None:
    """(the external collection's name, its metrics), or None for a card without them."""
    metrics = (card.get("metrics") or {}).get("external")
    if not metrics:
        return None
    collection = (card.get("data") or {}).get("external") or {}
    return collection.get("name") or "external", metrics


def _external_threshold_clause(card: dict[str, Any]) -> str:
    if "external_target" in (card.get("threshold_rule") or {}):
        return "; the threshold was kept low enough to reach its sensitivity target on it as well"
    return ", as were its thresholds"


def _data_label(split: str, data: dict[str, Any]) -> str:
    return f"{split} ({data['name']})" if data.get("name") else split


def _external_section(card: dict[str, Any], split: str) -> list[str]:
    """In-domain `split` beside the external collection, or a line saying it was not measured."""
    external = _external(card)
    if external is None:
        return [
            "## External collection",
            "",
            "Not measured: this version was not evaluated on another clinic's images.",
            "",
        ]
    name, outside = external
    inside = card["metrics"][split]

    def both(label: str, value: Callable[[dict[str, Any]], str]) -> str:
        return f"| {label} | {value(inside)} | {value(outside)} |"

    def auc(result: dict[str, Any]) -> str:
        low, high = result["auc_ci95"]
        return f"{result['auc']:.3f} ({low:.3f}-{high:.3f})"

    def count(key: str) -> Callable[[dict[str, Any]], str]:
        return lambda result: str(result["confusion_matrix"][key])

    return [
        f"## In-domain {split} and external collection ({name})",
        "",
        f"`{name}` is another clinic's collection of {outside['n']} images, {outside['n_malignant']} malignant. "
        "The model never trained on it and its calibration was fitted on validation alone"
        f"{_external_threshold_clause(card)}: these figures show how the model holds up on images from"
        f" elsewhere. Both columns use the stored threshold {card['threshold']:.3f}.",
        "",
        f"| metric | {split} (in-domain) | {name} (external) |",
        "|---|---|---|",
        both("images (malignant)", lambda result: f"{result['n']} ({result['n_malignant']})"),
        both("ROC AUC (95% bootstrap CI)", auc),
        both("sensitivity", lambda result: f"{result['sensitivity']:.3f}"),
        both("specificity", lambda result: f"{result['specificity']:.3f}"),
        both("balanced accuracy", lambda result: f"{result['balanced_accuracy']:.3f}"),
        both("expected calibration error (10 bins)", lambda result: f"{result['ece']:.4f}"),
        both("malignant called malignant (TP)", count("tp")),
        both("malignant called benign (FN)", count("fn")),
        both("benign called benign (TN)", count("tn")),
        both("benign called malignant (FP)", count("fp")),
        "",
    ]


def _roc_plot(
    result: dict[str, Any], path: Path, split: str, external: tuple[str, dict[str, Any]] | None = None
) -> None:
    figure, axes = plt.subplots(figsize=(4.5, 4.5))
    axes.plot(result["roc_curve"]["fpr"], result["roc_curve"]["tpr"], label=f"{split} AUC {result['auc']:.3f}")
    if external is not None:
        name, outside = external
        axes.plot(
            outside["roc_curve"]["fpr"],
            outside["roc_curve"]["tpr"],
            linestyle="--",
            label=f"{name} AUC {outside['auc']:.3f}",
        )
        # The same threshold lands elsewhere on another clinic's images: show where.
        axes.scatter(
            [1 - outside["specificity"]],
            [outside["sensitivity"]],
            color="red",
            marker="s",
            zorder=3,
            label=f"threshold on {name}",
        )
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


def _calibration_plot(
    result: dict[str, Any], path: Path, split: str, external: tuple[str, dict[str, Any]] | None = None
) -> None:
    figure, axes = plt.subplots(figsize=(4.5, 4.5))
    axes.plot([0, 1], [0, 1], linestyle=":", color="grey")
    curves = [(split, result, "o")] + ([(external[0], external[1], "s")] if external else [])
    for name, metrics, marker in curves:
        bins = metrics["reliability"]
        axes.plot(
            [b["mean_score"] for b in bins],
            [b["observed"] for b in bins],
            marker=marker,
            label=f"{name} ECE {metrics['ece']:.3f}",
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
