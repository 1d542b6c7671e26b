"""Heat maps measured (issue 23, item 2): render cost per request, and faithfulness on real images.

- Cost: `shared.heatmap.render_heatmap` (decode the stored upload, draw, encode the PNG) on a
  typical ISIC upload (600x450 JPEG), a 1024x768 one, and 12 MP camera images (JPEG and PNG),
  in CPU time of the rendering thread and wall time, median of `rounds`. The worker adds a
  store read and write around it. The uploads are an ISIC 2018 test image scaled to each size.
- Faithfulness: on the correctly classified malignant ISIC 2018 test images, the share for which
  removing the map's top 20% lowers p(malignant) more than removing a random 20%, and the
  correlation of the served map with a Grad-CAM of the Keras model (shared/model/faithfulness.py).

    PYTHONPATH=. .venv/bin/python -m bench.heatmap [--model-dir models/versions/<v>] [--images N]

The last line is one JSON object with every number; `bench/trust.py` imports the two functions.
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from shared.heatmap import render_heatmap
from shared.images import model_input_from_bytes
from shared.settings import REPO_ROOT, Settings

DATASETS = Settings.from_env().datasets_dir
MALIGNANT_TEST_IMAGES = DATASETS / "ham10000" / "test" / "malignant"
LIMITS = {"max_bytes": 50 * 1024 * 1024, "max_pixels": 100_000_000}
# (name, size, format) of the uploads rendered: what ISIC serves, and a phone camera's.
UPLOADS = (
    ("isic_600x450_jpeg", (600, 450), "JPEG"),
    ("1024x768_jpeg", (1024, 768), "JPEG"),
    ("camera_4000x3000_jpeg", (4000, 3000), "JPEG"),
    ("camera_4000x3000_png", (4000, 3000), "PNG"),
)


def _upload(source: Image.Image, size: tuple[int, int], image_format: str) -> bytes:
    buffer = io.BytesIO()
    source.resize(size, Image.Resampling.BICUBIC).save(
        buffer, image_format, **({"quality": 90} if image_format == "JPEG" else {})
    )
    return buffer.getvalue()


def measure_heatmap_ms(rounds: int = 9, source: Path | None = None) -> dict[str, Any]:
    """Median render cost (ms of CPU and of wall time) and PNG size per upload kind."""
    path = source or sorted(MALIGNANT_TEST_IMAGES.glob("*.jpg"))[0]
    image = Image.open(path).convert("RGB")
    activation = np.random.default_rng(0).normal(0.0, 1.0, (7, 7))
    results: dict[str, Any] = {}
    for name, size, image_format in UPLOADS:
        data = _upload(image, size, image_format)
        cpu_ms, wall_ms = [], []
        for _ in range(rounds):
            cpu, wall = time.thread_time(), time.perf_counter()
            png = render_heatmap(data, activation, **LIMITS)
            cpu_ms.append((time.thread_time() - cpu) * 1000)
            wall_ms.append((time.perf_counter() - wall) * 1000)
        drawn = Image.open(io.BytesIO(png)).size
        results[name] = {
            "upload_bytes": len(data),
            "cpu_ms": round(statistics.median(cpu_ms), 1),
            "wall_ms": round(statistics.median(wall_ms), 1),
            "png_bytes": len(png),
            "drawn_size": list(drawn),
        }
    return results


def measure_faithfulness(model_dir: Path, images: int | None = None) -> dict[str, Any]:
    """The issue's two faithfulness figures for the version in `model_dir` (needs TensorFlow)."""
    import keras

    from shared.model import architecture  # noqa: F401  (registers the model's own layer for loading)
    from shared.model.faithfulness import deletion_test, grad_cam, map_correlations
    from shared.serving.runtime import ServingModel

    card = json.loads((model_dir / "card.json").read_text())
    served = ServingModel.from_bytes(card["version"], (model_dir / card["serving_artifact"]).read_bytes(), card)
    paths = sorted(MALIGNANT_TEST_IMAGES.glob("*.jpg"))
    pixels = np.stack([model_input_from_bytes(path.read_bytes(), **LIMITS) for path in paths])
    outputs = [served.run(pixels[start : start + 32]) for start in range(0, len(pixels), 32)]
    probabilities = np.concatenate([served.probabilities(output) for output in outputs])
    activations = np.concatenate([output.class_activation for output in outputs])
    correct = np.flatnonzero(probabilities >= served.threshold_for(None)[0])[:images]
    deletion = deletion_test(served, pixels[correct], activations[correct])
    model = keras.saving.load_model(model_dir / "model.keras", compile=False)
    chosen = pixels[correct]
    reference = np.concatenate([grad_cam(model, chosen[start : start + 32]) for start in range(0, len(chosen), 32)])
    correlations = map_correlations(activations[correct], reference)
    return {
        "version": card["version"],
        "malignant_images": len(paths),
        "correctly_classified": len(correct),
        "map_beats_random_share": round(float(deletion.map_beats_random.mean()), 3),
        "median_drop_map": round(float(np.median(deletion.original - deletion.after_map)), 3),
        "median_drop_random": round(float(np.median(deletion.original - deletion.after_random)), 3),
        "grad_cam_correlation_min": round(float(correlations.min()), 6),
        "grad_cam_correlation_median": round(float(np.median(correlations)), 6),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.heatmap", description=__doc__)
    production = json.loads((REPO_ROOT / "models" / "aliases" / "production.json").read_text())["version"]
    parser.add_argument("--model-dir", type=Path, default=REPO_ROOT / "models" / "versions" / production)
    parser.add_argument("--images", type=int, default=None, help="correctly classified images to use (all)")
    parser.add_argument("--rounds", type=int, default=9)
    args = parser.parse_args(argv)
    cost = measure_heatmap_ms(args.rounds)
    for name, figures in cost.items():
        print(f"render {name}: {figures['cpu_ms']} ms CPU, {figures['wall_ms']} ms wall, {figures['png_bytes']} B")
    faithfulness = measure_faithfulness(args.model_dir, args.images)
    print(f"faithfulness: {faithfulness}")
    print(json.dumps({"render": cost, "faithfulness": faithfulness}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
