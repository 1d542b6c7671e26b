"""`make bench-trust`: the issue-23 targets measured on the shipped model (not a test).

- Out-of-domain: the domain score's AUROC for SD-198 clinical photographs (the half never
  fitted) against ISIC 2018 test images, and the share of each set that each warning flags:
  ISIC 2018 test, Derm7pt, ISIC 2020's held-out part (by patient, as training held it out),
  the SD-198 reported half. Nothing of these sets was fitted on.
- Cost: worker CPU per image of the served artifact with the trust outputs and the domain
  judgement, against the same version's probability-only artifact, in interleaved rounds.
- Heat map: render time per request, and faithfulness (bench/heatmap.py).
- Drift: predictions until the alert condition holds after the stream switches collection
  (services/insights/drift.py).

    PYTHONPATH=. .venv/bin/python -m bench.trust [--model-dir models/versions/<v>] [--per-set N]

The last line is one JSON object with every number.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from shared.images import model_input_from_bytes
from shared.model.evaluation import roc_auc
from shared.serving import domain as domains
from shared.serving.runtime import ModelOutputs, ServingModel
from shared.settings import REPO_ROOT, Settings

DATASETS = Settings.from_env().datasets_dir
LIMITS = {"max_bytes": 50 * 1024 * 1024, "max_pixels": 100_000_000}
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png"}


def load_version(folder: Path, *, threads: int = 1) -> ServingModel:
    """A version folder served as a worker serves it (its domain statistics when it has them)."""
    card = json.loads((folder / "card.json").read_text())
    artifact = (folder / card["serving_artifact"]).read_bytes()
    fitted = card.get("domain")
    domain = domains.DomainModel.from_bytes((folder / fitted["file"]).read_bytes()) if fitted else None
    return ServingModel.from_bytes(card["version"], artifact, card, threads=threads, domain=domain)


def image_paths(folder: Path) -> list[Path]:
    return sorted(path for path in folder.rglob("*") if path.suffix.lower() in IMAGE_SUFFIXES)


def pixels_of(paths: list[Path]) -> np.ndarray:
    return np.stack([model_input_from_bytes(path.read_bytes(), **LIMITS) for path in paths])


def isic2020_held_out(limit: int | None) -> np.ndarray:
    """ISIC 2020's held-out part, split by patient exactly as training split it."""
    from shared.model.data import load_collection_folder
    from shared.settings import Settings

    collection = load_collection_folder(
        "isic2020", DATASETS / "isic2020", external=False, holdout_fraction=Settings().holdout_fraction
    )
    return collection.test.pixels[:limit]


def judge_all(served: ServingModel, pixels: np.ndarray, batch_size: int = 32) -> list[domains.DomainJudgement]:
    judgements: list[domains.DomainJudgement] = []
    for start in range(0, len(pixels), batch_size):
        judgements += served.judge_domain(served.run(pixels[start : start + batch_size])) or []
    return judgements


def out_of_domain(served: ServingModel, per_set: int | None) -> dict[str, Any]:
    sd198 = [p for p in image_paths(DATASETS / "clinical-sd198") if not domains.in_fitted_half(p.name)]
    sets = {
        "isic2018_test": pixels_of(image_paths(DATASETS / "ham10000" / "test")[:per_set]),
        "derm7pt": pixels_of(image_paths(DATASETS / "derm7pt")[:per_set]),
        "isic2020_held_out": isic2020_held_out(per_set),
        "sd198_reported_half": pixels_of(sd198),
    }
    judged = {name: judge_all(served, pixels) for name, pixels in sets.items()}
    scores = {name: np.array([j.score for j in judgements]) for name, judgements in judged.items()}
    report: dict[str, Any] = {
        "score_auroc_sd198_vs_isic2018": round(_separation(scores["isic2018_test"], scores["sd198_reported_half"]), 4),
        "sets": {},
    }
    for name, judgements in judged.items():
        shares = domains.flagged_shares(judgements)
        report["sets"][name] = {
            key: round(value, 4) if isinstance(value, float) else value for key, value in shares.items()
        }
        print(f"{name}: {report['sets'][name]}", flush=True)
    print(f"score AUROC, SD-198 reported half vs ISIC 2018 test: {report['score_auroc_sd198_vs_isic2018']}", flush=True)
    return report


def worker_cost(trusted: ServingModel, plain: ServingModel, pixels: np.ndarray, rounds: int = 6) -> dict[str, Any]:
    """CPU seconds per image of what the worker does with a batch of 8, with and without the
    trust outputs and judgement; rounds interleaved so machine noise falls on both alike."""
    batch = pixels[:8]

    def with_trust() -> None:
        outputs: ModelOutputs = trusted.run(batch)
        trusted.probabilities(outputs)
        trusted.judge_domain(outputs)
        trusted.domain.project(outputs.block_statistics)
        np.round(outputs.class_activation.astype(np.float64), 4).tolist()

    def without() -> None:
        plain.probabilities(plain.run(batch))

    timings: dict[str, list[float]] = {"with_trust": [], "probability_only": []}
    for _ in range(rounds):
        for name, step in (("with_trust", with_trust), ("probability_only", without)):
            step()  # warm
            started = time.process_time()
            for _ in range(20):
                step()
            timings[name].append((time.process_time() - started) / (20 * len(batch)) * 1000)
    medians = {name: float(np.median(values)) for name, values in timings.items()}
    result = {
        "cpu_ms_per_image": {name: round(value, 3) for name, value in medians.items()},
        "added_cpu_ms_per_image": round(medians["with_trust"] - medians["probability_only"], 3),
        "ratio": round(medians["with_trust"] / medians["probability_only"], 3),
    }
    print(f"worker CPU per image: {result}", flush=True)
    return result


def _separation(negatives: np.ndarray, positives: np.ndarray) -> float:
    """AUROC of positives (clinical photographs) against negatives (dermoscopy)."""
    labels = np.concatenate([np.zeros(len(negatives)), np.ones(len(positives))])
    return roc_auc(labels, np.concatenate([negatives, positives]))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    production = json.loads((REPO_ROOT / "models" / "aliases" / "production.json").read_text())["version"]
    parser.add_argument("--model-dir", type=Path, default=REPO_ROOT / "models" / "versions" / production)
    parser.add_argument("--per-set", type=int, help="at most this many images of each dermoscopy set")
    args = parser.parse_args(argv)
    card = json.loads((args.model_dir / "card.json").read_text())
    trusted = load_version(args.model_dir)
    if trusted.domain is None:
        raise SystemExit(f"{args.model_dir} has no domain statistics: package it first (services.trainer package)")
    plain = load_version(args.model_dir.parent / card["packaged_from"]) if card.get("packaged_from") else None
    report: dict[str, Any] = {"version": trusted.version, "out_of_domain": out_of_domain(trusted, args.per_set)}
    probe = pixels_of(image_paths(DATASETS / "ham10000" / "test")[:8])
    if plain is not None:
        report["worker_cost"] = worker_cost(trusted, plain, probe)
    # Imported here: both import this module's helpers.
    from bench.drift_replay import replay_drift
    from bench.heatmap import measure_faithfulness, measure_heatmap_ms

    report["heatmap"] = {"render": measure_heatmap_ms(), "faithfulness": measure_faithfulness(args.model_dir)}
    print(f"heat map: {report['heatmap']}", flush=True)
    report["drift"] = replay_drift(args.model_dir)
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
