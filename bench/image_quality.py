"""Can a blur and exposure check on the model input tell a retake-worthy image? Groundwork for
issue 23, item 4 ("under 1 ms per image, flagging at most 3% of ISIC 2018 test images").

On the 224x224 model input (what the worker holds), per image, shared/image_quality.py's
`assess`: sharpness (variance of the Laplacian of the grey image) against a bar set at HAM10000
training images' 1st percentile (printed here, to check it), and exposure in absolute grey
levels. The bench prints what they flag on ISIC 2018 test, Derm7pt, ISIC
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

from shared.image_quality import ImageQuality, assess
from shared.images import model_input_from_bytes
from shared.settings import Settings

DATASETS = Settings.from_env().datasets_dir
LIMITS = {"max_bytes": 50 * 1024 * 1024, "max_pixels": 100_000_000}


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
    assessed = {name: [assess(pixels) for pixels in images] for name, images in sets.items()}
    per_image_ms = 1000 * (time.perf_counter() - started) / sum(len(images) for images in sets.values())
    # The sharpness bar in shared/image_quality.py is this percentile of HAM10000 training images.
    ham_p1 = float(np.quantile([quality.sharpness for quality in assessed["ham_train"]], 0.01))

    def flags(qualities: list[ImageQuality]) -> dict[str, float]:
        return {
            "blurred": round(float(np.mean([quality.blurred for quality in qualities])), 3),
            "exposure": round(float(np.mean([quality.exposure is not None for quality in qualities])), 3),
            "either": round(float(np.mean([quality.retake for quality in qualities])), 3),
        }

    report = {name: flags(qualities) for name, qualities in assessed.items() if name != "ham_train"}
    for name, shares in report.items():
        print(f"{name}: {shares}")
    print(f"assess: {per_image_ms:.3f} ms per image; HAM10000 training sharpness, 1st percentile: {ham_p1:.1f}")
    print(json.dumps({"per_image_ms": round(per_image_ms, 3), "ham_sharpness_p1": ham_p1, "flagged": report}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
