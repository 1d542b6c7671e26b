"""Does the drift alert stay quiet on in-domain images and fire on another clinic's? (issue 23)

A stream of predictions as the workers announce them (`predictions.scored`, 8 to an event):
2,000 ISIC 2018 test images (the 1,512 in a shuffled cycle), then 300 of another collection
(Derm7pt, another clinic's; ISIC 2020's held-out patients). The served model scores the images;
the insights service's own `DriftMonitor` windows them. Printed per collection: the highest drift
figure during the ISIC 2018 part, and how many predictions after the switch the alert condition
(`slc_input_drift > DRIFT_THRESHOLD`) first holds; InputDrift fires once it has held for the
rule's `for` (2 minutes of scrapes).

    PYTHONPATH=. .venv/bin/python -m bench.drift_replay [--model-dir models/versions/<v>]

tests/services/insights/test_drift_replay.py runs the same streams through the real broker,
insights process and promtool; this is the quick in-process measurement (`bench.trust` calls
`replay_drift`). The last line is JSON.
"""

from __future__ import annotations

import argparse
import json
import uuid
from pathlib import Path
from typing import Any

import numpy as np

from bench.trust import image_paths, load_version, pixels_of
from services.insights.drift import DRIFT_THRESHOLD, MIN_WINDOW
from services.insights.drift_consumer import DriftMonitor
from shared import dataset
from shared.messaging.schemas import Event
from shared.messaging.topology import EVENT_PREDICTIONS_SCORED
from shared.serving.domain import drift_sample
from shared.serving.runtime import ServingModel
from shared.settings import REPO_ROOT, Settings

DATASETS = Settings.from_env().datasets_dir
IN_DOMAIN_PREDICTIONS = 2_000
SWITCHED_PREDICTIONS = 300
EVENT_SIZE = 8  # predictions per event: a worker's batch under moderate load
# Another clinic's collection (never trained on) and a trained-on one's held-out patients.
SWITCHES = ("derm7pt", "isic2020")


def collection_paths() -> dict[str, list[Path]]:
    """ISIC 2018 test, Derm7pt, and ISIC 2020's held-out part (by patient, as the store holds it out)."""
    isic2020 = DATASETS / "isic2020"
    if not (isic2020 / "manifest.csv").is_file():
        raise FileNotFoundError(f"no ISIC 2020 collection in {DATASETS}: set DATASETS_DIR to the shared datasets")
    record = dataset.Collection("isic2020", False, Settings().holdout_fraction)
    patients = dataset.read_manifest_patients(isic2020 / "manifest.csv")
    held_out = [
        isic2020 / path for path, patient in patients.items() if dataset.assign_part(record, "", patient) == "test"
    ]
    return {
        "isic2018_test": image_paths(DATASETS / "ham10000" / "test"),
        "derm7pt": image_paths(DATASETS / "derm7pt"),
        "isic2020": sorted(held_out),
    }


def scored_predictions(model: ServingModel, paths: list[Path], batch_size: int = 32) -> list[dict[str, Any]]:
    """What a worker announces of each image (its `predictions.scored` items), from the served model."""
    if model.domain is None:
        raise ValueError(f"model {model.version} has no domain statistics: it announces nothing to watch")
    scored: list[dict[str, Any]] = []
    for start in range(0, len(paths), batch_size):
        outputs = model.run(pixels_of(paths[start : start + batch_size]))
        judgements = model.judge_domain(outputs) or []
        projections = model.domain.project(outputs.block_statistics)
        for probability, judgement, projection in zip(
            model.probabilities(outputs), judgements, projections, strict=True
        ):
            scored.append(drift_sample(float(probability), judgement, projection))
    return scored


def stream(in_domain: list[dict[str, Any]], switched: list[dict[str, Any]], seed: int) -> list[dict[str, Any]]:
    """IN_DOMAIN_PREDICTIONS of `in_domain` (shuffled cycles), then SWITCHED_PREDICTIONS of `switched`."""
    rng = np.random.default_rng(seed)
    cycles = -(-IN_DOMAIN_PREDICTIONS // len(in_domain))
    order = np.concatenate([rng.permutation(len(in_domain)) for _ in range(cycles)])[:IN_DOMAIN_PREDICTIONS]
    later = rng.permutation(len(switched))[:SWITCHED_PREDICTIONS]
    return [in_domain[i] for i in order] + [switched[i] for i in later]


def events(version: str, predictions: list[dict[str, Any]]) -> list[Event]:
    """The stream cut into `predictions.scored` events of EVENT_SIZE predictions."""
    return [
        Event(
            name=EVENT_PREDICTIONS_SCORED,
            event_id=uuid.uuid4().hex,
            occurred_at=0.0,
            data={"model_version": version, "predictions": predictions[start : start + EVENT_SIZE]},
        )
        for start in range(0, len(predictions), EVENT_SIZE)
    ]


def alert_onset(figures: list[float | None], switch_at: int) -> dict[str, Any]:
    """From the drift figure after each event: the in-domain part's highest, and the first
    prediction after the switch at which the figure is above the threshold."""
    before = [f for f in figures[: switch_at // EVENT_SIZE] if f is not None]
    crossing = next(
        (
            index
            for index, f in enumerate(figures)
            if index * EVENT_SIZE >= switch_at and f is not None and f > DRIFT_THRESHOLD
        ),
        None,
    )
    return {
        "in_domain_drift_max": round(max(before), 4) if before else None,
        "in_domain_alerts": sum(f > DRIFT_THRESHOLD for f in before),
        "drift_at_end": None if figures[-1] is None else round(figures[-1], 4),
        "predictions_until_condition": None if crossing is None else (crossing + 1) * EVENT_SIZE - switch_at,
    }


def replay_drift(model_dir: Path | None = None, *, seed: int = 23) -> dict[str, Any]:
    """Replay each switch through an in-process DriftMonitor; print and return the numbers."""
    production = json.loads((REPO_ROOT / "models" / "aliases" / "production.json").read_text())["version"]
    model = load_version(model_dir or REPO_ROOT / "models" / "versions" / production)
    paths = collection_paths()
    scored = {name: scored_predictions(model, collection) for name, collection in paths.items()}
    report: dict[str, Any] = {
        "version": model.version,
        "threshold": DRIFT_THRESHOLD,
        "min_window": MIN_WINDOW,
        "images": {name: len(collection) for name, collection in paths.items()},
        "switches": {},
    }
    for offset, name in enumerate(SWITCHES):
        version = f"replay-{name}"
        monitor = DriftMonitor(lambda _version: model.domain.reference_projection)
        figures = []
        for event in events(version, stream(scored["isic2018_test"], scored[name], seed + offset)):
            monitor.ingest(event.encode())
            figures.append(monitor.record()["versions"][version]["window"]["drift"])
        report["switches"][name] = alert_onset(figures, IN_DOMAIN_PREDICTIONS)
        print(f"ISIC 2018 test -> {name}: {report['switches'][name]}", flush=True)
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-dir", type=Path, help="a version folder (default: the shipped production one)")
    args = parser.parse_args(argv)
    print(json.dumps(replay_drift(args.model_dir)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
