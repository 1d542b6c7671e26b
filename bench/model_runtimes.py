"""Benchmark the serving runtimes for a model version on this machine (not a test).

Keras (TensorFlow), ONNX Runtime and LiteRT at batch 1, 8, 16 and 32 with one thread per
core; parity of each with Keras over a whole labelled folder; int8 attempts (ONNX static
QDQ and LiteRT full-integer), kept only if validation AUC drops <= 0.005 and they are
faster. Optionally the cost and gain of 8-view test-time augmentation (flips/rotations).

    PYTHONPATH=. .venv/bin/python bench/model_runtimes.py --model-dir models/versions/<v> \
        --data ../shared/datasets/ham10000
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from shared.errors import ModelUnavailable
from shared.model.architecture import ShadesOfGray  # noqa: F401 (registers the layer for load_model)
from shared.model.data import load_folder, split_validation
from shared.model.evaluation import roc_auc
from shared.model.export import export_artifact
from shared.serving.card import ONNX_ARTIFACT, SERVING_ARTIFACT
from shared.serving.runtime import LITERT_ARTIFACT, ServingModel

Runner = Callable[[np.ndarray], np.ndarray]
THREADS = os.cpu_count() or 1
BATCHES = (1, 8, 16, 32)
MAX_AUC_DROP = 0.005


def keras_runner(model: keras.Model) -> Runner:
    call = tf.function(lambda x: model(x, training=False), reduce_retracing=True)
    return lambda x: call(tf.constant(x, tf.float32)).numpy().reshape(-1)


def served_runner(artifact: bytes, artifact_name: str) -> Runner:
    """The artifact run as workers run it: `ServingModel` in the runtime its name picks."""
    card = {"threshold": 0.5, "serving_artifact": artifact_name}
    return ServingModel.from_bytes("bench", artifact, card, threads=THREADS).predict_raw


def version_artifact(folder: Path, card: dict, model: keras.Model, name: str) -> bytes:
    """The version's own artifact when its card serves `name`, else a fresh export of its Keras model."""
    if card.get("serving_artifact", SERVING_ARTIFACT) == name:
        return (folder / name).read_bytes()
    return export_artifact(model, name)


def litert_int8(model: keras.Model, calibration: np.ndarray) -> bytes:
    """Full-integer int8 weights and activations (float32 input and output), calibrated on
    `calibration`; the float32 export is `shared.model.export.export_litert`."""
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = lambda: ([image[None].astype(np.float32)] for image in calibration)
    # The converter prints its whole saved-model signature to stdout; keep stdout for results.
    with contextlib.redirect_stdout(io.StringIO()):
        return converter.convert()


def onnx_int8(artifact: bytes, calibration: np.ndarray) -> bytes:
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.images = iter(calibration)

        def get_next(self):
            image = next(self.images, None)
            return None if image is None else {"image": image[None].astype(np.float32)}

    with tempfile.TemporaryDirectory() as folder:
        source, target = Path(folder) / "in.onnx", Path(folder) / "out.onnx"
        source.write_bytes(artifact)
        quantize_static(
            str(source),
            str(target),
            Reader(),
            quant_format=QuantFormat.QDQ,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            per_channel=True,
        )
        return target.read_bytes()


def predict_all(run: Runner, pixels: np.ndarray, batch: int = 32) -> np.ndarray:
    return np.concatenate([run(pixels[i : i + batch].astype(np.float32)) for i in range(0, len(pixels), batch)])


def time_batches(run: Runner, pixels: np.ndarray, seconds: float) -> dict[int, float]:
    """Milliseconds per batch (median of repeated calls after a warm-up) per batch size."""
    result = {}
    for batch in BATCHES:
        x = pixels[:batch].astype(np.float32)
        run(x)
        times, deadline = [], time.monotonic() + seconds
        while time.monotonic() < deadline or len(times) < 3:
            started = time.perf_counter()
            run(x)
            times.append((time.perf_counter() - started) * 1000)
        result[batch] = float(np.median(times))
    return result


def dihedral_views(pixels: np.ndarray) -> list[np.ndarray]:
    return [np.rot90(flipped, k, axes=(1, 2)) for flipped in (pixels, pixels[:, :, ::-1]) for k in range(4)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", type=Path, required=True, help="a version folder with model.keras")
    parser.add_argument("--data", type=Path, required=True, help="dataset root with train/ and test/")
    parser.add_argument("--seconds", type=float, default=5.0, help="timing budget per runtime and batch size")
    parser.add_argument("--tta", action="store_true", help="also measure 8-view test-time augmentation")
    args = parser.parse_args()
    # Line buffering: a converter or quantiser that forks must not inherit (and print twice)
    # half a line of our results.
    sys.stdout.reconfigure(line_buffering=True)

    card = json.loads((args.model_dir / "card.json").read_text())
    config = card["training"]["config"]
    model = keras.saving.load_model(args.model_dir / "model.keras", compile=False)
    test = load_folder(args.data / "test")
    _, validation = split_validation(load_folder(args.data / "train"), config["validation_fraction"])
    calibration = validation.pixels[np.random.default_rng(0).choice(len(validation), 128, replace=False)]

    onnx_artifact = version_artifact(args.model_dir, card, model, ONNX_ARTIFACT)
    runners = {
        "keras": keras_runner(model),
        "onnxruntime": served_runner(onnx_artifact, ONNX_ARTIFACT),
        "litert": served_runner(version_artifact(args.model_dir, card, model, LITERT_ARTIFACT), LITERT_ARTIFACT),
    }
    int8 = {
        "onnxruntime-int8": served_runner(onnx_int8(onnx_artifact, calibration), ONNX_ARTIFACT),
        "litert-int8": served_runner(litert_int8(model, calibration), LITERT_ARTIFACT),
    }
    reference_test = predict_all(runners["keras"], test.pixels)
    reference_auc = roc_auc(validation.labels, predict_all(runners["keras"], validation.pixels))
    report: dict[str, dict] = {}
    for name, run in {**runners, **int8}.items():
        try:
            timing = time_batches(run, test.pixels, args.seconds)
            entry = {"ms_per_batch": timing, "images_per_s": {b: b * 1000 / ms for b, ms in timing.items()}}
            if name != "keras":
                entry["max_abs_diff_test"] = float(np.max(np.abs(predict_all(run, test.pixels) - reference_test)))
            if name in int8:
                entry["val_auc_drop"] = reference_auc - roc_auc(validation.labels, predict_all(run, validation.pixels))
        except ModelUnavailable as error:
            # e.g. full-integer LiteRT cannot divide by a colour-constancy illuminant that
            # quantises to zero; some images pass, others fail.
            print(f"{name:17s} fails to run: {error}", flush=True)
            continue
        report[name] = entry
        print(
            f"{name:17s} "
            + "  ".join(f"b{b}: {ms:7.1f} ms ({b * 1000 / ms:5.1f} img/s)" for b, ms in timing.items())
            + (f"  max|diff| {entry['max_abs_diff_test']:.1e}" if "max_abs_diff_test" in entry else "")
            + (f"  val AUC drop {entry['val_auc_drop']:+.4f}" if "val_auc_drop" in entry else ""),
            flush=True,
        )
    for name, entry in report.items():
        ratios = {b: report["keras"]["ms_per_batch"][b] / entry["ms_per_batch"][b] for b in BATCHES}
        entry["speedup_vs_keras"] = ratios
        print(f"{name:17s} speed-up vs Keras: " + "  ".join(f"b{b} x{r:.2f}" for b, r in ratios.items()))
    if args.tta:
        views = [predict_all(runners["onnxruntime"], view) for view in dihedral_views(validation.pixels)]
        tta_auc = roc_auc(validation.labels, np.mean(views, 0))
        report["tta8"] = {"val_auc_single": reference_auc, "val_auc_tta8": tta_auc, "cost": "8x one view's time"}
        print(f"TTA (8 views): val AUC {reference_auc:.4f} -> {report['tta8']['val_auc_tta8']:.4f} at 8x the cost")
    print(json.dumps({"threads": THREADS, "version": card["version"], "val_auc_keras": reference_auc, **report}))


if __name__ == "__main__":
    main()
