"""Which features tell a dermatoscope image from anything else? Groundwork for issue 23.

Candidate out-of-domain scores from the shipped model's own backbone, each fitted on HAM10000
training images and judged on images it never saw:

- `pooled`: Mahalanobis distance of the final pooled features (1,280), one shrunk Gaussian;
- `blocks`: per-channel mean and standard deviation of the outputs of blocks 5 to 12, one
  shrunk Gaussian per block, the distances summed;
- `blocks_two_clinics`: the same, fitted on HAM10000 and ISIC 2020 training images together;
- `dermoscopy_vs_clinical`: a logistic regression on the block statistics, dermoscopy (HAM10000
  and ISIC 2020 training images) against half of SD-198 (the other half is reported, never fitted).

For each it prints the AUROC of SD-198's reported half against ISIC 2018 test images, and the share
of each set flagged at thresholds set on held-out HAM10000 training images (1% and 5% flagged
there). The collections are the shared folders; nothing is written.

    PYTHONPATH=. .venv/bin/python -m bench.domain_features [--fit 1500] [--per-set 300]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from shared.images import model_input_from_bytes
from shared.model.evaluation import roc_auc
from shared.settings import REPO_ROOT, Settings

DATASETS = Settings.from_env().datasets_dir
BLOCKS = range(5, 13)
SHRINKAGE = 0.1
LIMITS = {"max_bytes": 50 * 1024 * 1024, "max_pixels": 100_000_000}


def image_paths(folder: Path) -> list[Path]:
    return sorted(path for path in folder.rglob("*") if path.suffix.lower() in {".jpg", ".jpeg", ".png"})


def sample(paths: list[Path], count: int, seed: int) -> list[Path]:
    return random.Random(seed).sample(paths, min(count, len(paths)))


def halves_by_hash(paths: list[Path]) -> tuple[list[Path], list[Path]]:
    """Split by a hash of the file name: (fitted half, reported half), fixed across runs."""
    fitted = [path for path in paths if hashlib.sha256(path.name.encode()).digest()[0] % 2 == 0]
    return fitted, [path for path in paths if path not in set(fitted)]


def feature_extractor(model_dir: Path) -> Callable[[np.ndarray], dict[str, np.ndarray]]:
    """A function from a uint8 batch to {"pooled": (n, 1280), "blocks": [(n, 2c) per block]} of the served model."""
    import keras

    import shared.model.architecture  # noqa: F401  (registers the colour constancy layer)

    model = keras.models.load_model(model_dir / "model.keras", compile=False)
    backbone = model.get_layer("mobilenetv2")
    outputs = [backbone.get_layer(f"block_{index}_project_BN").output for index in BLOCKS] + [backbone.output]
    inner = keras.Model(backbone.input, outputs)
    # The layers before the backbone (preprocessing: colour constancy if the version has it, scaling).
    image = model.input
    scaled = image
    for layer in model.layers[1 : model.layers.index(backbone)]:
        scaled = layer(scaled)
    extractor = keras.Model(image, inner(scaled))

    def features(batch: np.ndarray) -> dict[str, np.ndarray]:
        maps = [np.asarray(output) for output in extractor.predict(batch.astype("float32"), verbose=0)]
        blocks = [np.concatenate([block.mean(axis=(1, 2)), block.std(axis=(1, 2))], axis=1) for block in maps[:-1]]
        return {"pooled": maps[-1].mean(axis=(1, 2)), "blocks": blocks}

    return features


def extract(features: Callable, paths: list[Path], batch_size: int = 32) -> dict[str, object]:
    pooled, blocks = [], []
    for start in range(0, len(paths), batch_size):
        pixels = np.stack(
            [model_input_from_bytes(path.read_bytes(), **LIMITS) for path in paths[start : start + batch_size]]
        )
        out = features(pixels)
        pooled.append(out["pooled"])
        blocks.append(out["blocks"])
    return {
        "pooled": np.concatenate(pooled),
        "blocks": [np.concatenate([batch[index] for batch in blocks]) for index in range(len(BLOCKS))],
    }


class Gaussian:
    """Mean and a shrunk covariance (towards its diagonal's mean): Mahalanobis distances."""

    def __init__(self, samples: np.ndarray) -> None:
        self.mean = samples.mean(axis=0)
        covariance = np.cov(samples - self.mean, rowvar=False)
        target = np.eye(len(covariance)) * np.trace(covariance) / len(covariance)
        self.precision = np.linalg.inv((1 - SHRINKAGE) * covariance + SHRINKAGE * target)

    def distance(self, samples: np.ndarray) -> np.ndarray:
        centred = samples - self.mean
        return np.sqrt(np.einsum("ij,jk,ik->i", centred, self.precision, centred))


def logistic_regression(inside: np.ndarray, outside: np.ndarray, l2: float = 1.0, steps: int = 2000) -> Callable:
    """Standardised features, L2-penalised, full-batch gradient descent; returns a scorer (higher: outside)."""
    data = np.concatenate([inside, outside])
    labels = np.concatenate([np.zeros(len(inside)), np.ones(len(outside))])
    weights_per_class = np.where(labels == 1, len(data) / (2 * len(outside)), len(data) / (2 * len(inside)))
    mean, scale = data.mean(axis=0), data.std(axis=0) + 1e-6
    standard = (data - mean) / scale
    coef, bias = np.zeros(standard.shape[1]), 0.0
    for _ in range(steps):
        p = 1 / (1 + np.exp(-(standard @ coef + bias)))
        error = (p - labels) * weights_per_class
        coef -= 0.1 * (standard.T @ error / len(data) + l2 * coef / len(data))
        bias -= 0.1 * error.mean()
    return lambda samples: ((samples - mean) / scale) @ coef + bias


def _separation(negatives: np.ndarray, positives: np.ndarray) -> float:
    """AUROC of positives (clinical photographs) against negatives (dermoscopy)."""
    labels = np.concatenate([np.zeros(len(negatives)), np.ones(len(positives))])
    return roc_auc(labels, np.concatenate([negatives, positives]))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--fit", type=int, default=1500, help="HAM10000 training images the Gaussians are fitted on")
    parser.add_argument("--per-set", type=int, default=300, help="images of each other set")
    parser.add_argument("--model-dir", type=Path, default=REPO_ROOT / "models" / "versions" / "20261206T055921Z-24b0f8")
    args = parser.parse_args(argv)
    started = time.monotonic()
    ham_train = sample(image_paths(DATASETS / "ham10000" / "train"), args.fit + args.per_set, seed=1)
    isic2020 = sample(image_paths(DATASETS / "isic2020"), 2 * args.per_set, seed=2)
    sd198_fitted, sd198_reported = halves_by_hash(image_paths(DATASETS / "clinical-sd198"))
    sets = {
        "ham_fit": ham_train[: args.fit],
        "ham_heldout": ham_train[args.fit :],
        "isic2018_test": sample(image_paths(DATASETS / "ham10000" / "test"), args.per_set, seed=3),
        "derm7pt": sample(image_paths(DATASETS / "derm7pt"), args.per_set, seed=4),
        "isic2020_fit": isic2020[: args.per_set],
        "isic2020": isic2020[args.per_set :],
        "sd198_fitted": sd198_fitted,
        "sd198_reported": sd198_reported,
    }
    features = feature_extractor(args.model_dir)
    extracted = {name: extract(features, paths) for name, paths in sets.items()}
    print(f"features of {sum(map(len, sets.values()))} images in {time.monotonic() - started:.0f} s", flush=True)

    def block_stats(name: str) -> np.ndarray:
        return np.concatenate(extracted[name]["blocks"], axis=1)

    pooled = Gaussian(extracted["ham_fit"]["pooled"])
    per_block = [Gaussian(block) for block in extracted["ham_fit"]["blocks"]]
    two_clinics = [
        Gaussian(np.concatenate([a, b]))
        for a, b in zip(extracted["ham_fit"]["blocks"], extracted["isic2020_fit"]["blocks"], strict=True)
    ]
    classifier = logistic_regression(
        np.concatenate([block_stats("ham_fit"), block_stats("isic2020_fit")]), block_stats("sd198_fitted")
    )
    scores: dict[str, Callable[[str], np.ndarray]] = {
        "pooled": lambda name: pooled.distance(extracted[name]["pooled"]),
        "blocks": lambda name: sum(g.distance(b) for g, b in zip(per_block, extracted[name]["blocks"], strict=True)),
        "blocks_two_clinics": lambda name: sum(
            g.distance(b) for g, b in zip(two_clinics, extracted[name]["blocks"], strict=True)
        ),
        "dermoscopy_vs_clinical": lambda name: classifier(block_stats(name)),
    }
    reported = ["ham_heldout", "isic2018_test", "derm7pt", "isic2020", "sd198_reported"]
    report: dict[str, dict] = {}
    for score_name, score in scores.items():
        by_set = {name: score(name) for name in reported}
        row: dict[str, object] = {
            "auroc_sd198_vs_isic2018": round(_separation(by_set["isic2018_test"], by_set["sd198_reported"]), 3)
        }
        for share in (0.01, 0.05):
            threshold = np.quantile(by_set["ham_heldout"], 1 - share)
            row[f"flagged_at_{share:.0%}"] = {
                name: round(float((values > threshold).mean()), 3) for name, values in by_set.items()
            }
        report[score_name] = row
        print(f"{score_name}: {row}", flush=True)
    print(json.dumps({"sets": {name: len(paths) for name, paths in sets.items()}, "scores": report}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
