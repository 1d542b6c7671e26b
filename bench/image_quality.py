"""Can a blur and exposure check on the model input tell a retake-worthy image? Groundwork for
issue 23, item 4 ("under 1 ms per image, flagging at most 3% of ISIC 2018 test images").

On the 224x224 model input (what the worker holds), per image: sharpness (variance of the
Laplacian of the grey image), mean grey level, and the shares of nearly black and nearly
white pixels. The sharpness threshold is HAM10000 training images' 1st percentile; exposure
uses absolute grey levels. The bench prints what they flag on ISIC 2018 test, Derm7pt, ISIC
2020 and SD-198, and on ISIC 2018 test images degraded on purpose (Gaussian blur, under- and
over-exposure), with the metrics' cost per image.

    PYTHONPATH=. .venv/bin/python -m bench.image_quality [--per-set 500]
"""

from __future__ import annotations

import argparse
import json
import random
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

from shared.images import model_input_from_bytes
from shared.settings import REPO_ROOT

DATASETS = REPO_ROOT.parent / "shared" / "datasets"
LIMITS = {"max_bytes": 50 * 1024 * 1024, "max_pixels": 100_000_000}
# ITU-R 601-2 luma, as Pillow's "L".
LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


def metrics(pixels: np.ndarray) -> tuple[float, float, float, float]:
    """(sharpness, mean grey, share nearly black, share nearly white) of one uint8 HWC image."""
    grey = pixels.astype(np.float32) @ LUMA
    laplacian = grey[1:-1, :-2] + grey[1:-1, 2:] + grey[:-2, 1:-1] + grey[2:, 1:-1] - 4 * grey[1:-1, 1:-1]
    return float(laplacian.var()), float(grey.mean()), float((grey < 8).mean()), float((grey > 247).mean())


def inputs(folder: Path, count: int, seed: int) -> list[np.ndarray]:
    paths = sorted(path for path in folder.rglob("*") if path.suffix.lower() in {".jpg", ".jpeg", ".png"})
    chosen = random.Random(seed).sample(paths, min(count, len(paths)))
    return [model_input_from_bytes(path.read_bytes(), **LIMITS) for path in chosen]


DEGRADATIONS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "blur_radius_2": lambda p: np.asarray(Image.fromarray(p).filter(ImageFilter.GaussianBlur(2))),
    "blur_radius_4": lambda p: np.asarray(Image.fromarray(p).filter(ImageFilter.GaussianBlur(4))),
    "dark_x0.25": lambda p: (p.astype(np.float32) * 0.25).astype(np.uint8),
    "bright_+120": lambda p: np.clip(p.astype(np.int16) + 120, 0, 255).astype(np.uint8),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--per-set", type=int, default=500)
    args = parser.parse_args(argv)
    sets = {
        "ham_train": inputs(DATASETS / "ham10000" / "train", 2 * args.per_set, seed=1),
        "isic2018_test": inputs(DATASETS / "ham10000" / "test", args.per_set, seed=2),
        "derm7pt": inputs(DATASETS / "derm7pt", args.per_set, seed=3),
        "isic2020": inputs(DATASETS / "isic2020", args.per_set, seed=4),
        "sd198": inputs(DATASETS / "clinical-sd198", args.per_set, seed=5),
    }
    for name, degrade in DEGRADATIONS.items():
        sets[name] = [degrade(pixels) for pixels in sets["isic2018_test"]]
    started = time.perf_counter()
    measured = {name: np.array([metrics(pixels) for pixels in images]) for name, images in sets.items()}
    per_image_ms = 1000 * (time.perf_counter() - started) / sum(len(images) for images in sets.values())
    train = measured["ham_train"]
    # Sharpness from HAM10000's own spread (dermoscopy is smooth by nature); exposure in absolute
    # grey levels: another clinic's darker or brighter dermatoscope is not a bad exposure, and
    # its black vignette makes nearly black pixels normal, so only nearly white ones count.
    thresholds = {
        "blurred_below": float(np.quantile(train[:, 0], 0.01)),
        "dark_below": 50.0,
        "bright_above": 230.0,
        "white_above": 0.3,
    }

    def flags(values: np.ndarray) -> dict[str, float]:
        blurred = values[:, 0] < thresholds["blurred_below"]
        exposure = (
            (values[:, 1] < thresholds["dark_below"])
            | (values[:, 1] > thresholds["bright_above"])
            | (values[:, 3] > thresholds["white_above"])
        )
        return {
            "blurred": round(float(blurred.mean()), 3),
            "exposure": round(float(exposure.mean()), 3),
            "either": round(float((blurred | exposure).mean()), 3),
        }

    report = {name: flags(values) for name, values in measured.items() if name != "ham_train"}
    for name, shares in report.items():
        print(f"{name}: {shares}")
    print(f"metrics: {per_image_ms:.3f} ms per image; thresholds {thresholds}")
    print(json.dumps({"per_image_ms": round(per_image_ms, 3), "thresholds": thresholds, "flagged": report}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
