"""Export a Keras model to a serving artifact (ONNX or LiteRT) and prove the two agree."""

from __future__ import annotations

import contextlib
import io
import tempfile
from collections.abc import Callable
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from shared.errors import PermanentError
from shared.model.serving import LITERT_ARTIFACT, ONNX_ARTIFACT, SERVING_ARTIFACT, ServingModel

PARITY_TOLERANCE = 1e-4


class ParityError(PermanentError):
    """Raised when the serving artifact's outputs differ from the Keras model's."""

    code = "parity_failed"


def export_onnx(model: keras.Model) -> bytes:
    """Convert `model` to ONNX with a dynamic batch dimension; return the file's bytes."""
    # Keras refuses to export a model that has never been called (its shapes are unbuilt).
    model.predict(np.zeros((1, *model.input_shape[1:]), np.float32), verbose=0)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / ONNX_ARTIFACT
        model.export(str(path), format="onnx", verbose=False)
        return path.read_bytes()


def export_litert(model: keras.Model) -> bytes:
    """Convert `model` to a float32 LiteRT flatbuffer (the batch dimension stays dynamic)."""
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    # The converter prints its whole saved-model signature to stdout, which commands keep
    # for their results.
    with contextlib.redirect_stdout(io.StringIO()):
        return converter.convert()


_EXPORTERS: dict[str, Callable[[keras.Model], bytes]] = {ONNX_ARTIFACT: export_onnx, LITERT_ARTIFACT: export_litert}


def export_artifact(model: keras.Model, name: str) -> bytes:
    """Export `model` as the serving artifact called `name` (`model.onnx` or `model.tflite`)."""
    try:
        exporter = _EXPORTERS[name]
    except KeyError:
        raise ValueError(
            f"no exporter for serving artifact {name!r}; expected one of {', '.join(_EXPORTERS)}"
        ) from None
    return exporter(model)


def check_parity(
    model: keras.Model,
    artifact: bytes,
    pixels: np.ndarray,
    *,
    artifact_name: str = SERVING_ARTIFACT,
    tolerance: float = PARITY_TOLERANCE,
    batch_size: int = 32,
) -> float:
    """Compare raw outputs on `pixels`, running `artifact` as the workers would (its runtime
    chosen by `artifact_name`); return the largest difference or raise ParityError."""
    served = ServingModel.from_bytes("parity-check", artifact, {"threshold": 0.5, "serving_artifact": artifact_name})
    worst = 0.0
    for start in range(0, len(pixels), batch_size):
        batch = pixels[start : start + batch_size].astype(np.float32)
        expected = model.predict(batch, verbose=0).reshape(-1)
        worst = max(worst, float(np.max(np.abs(served.predict_raw(batch) - expected))))
    if worst > tolerance:
        raise ParityError(
            f"serving artifact {artifact_name} ({served.runtime.name}) differs from Keras by {worst:.2e} "
            f"(tolerance {tolerance:.0e})"
        )
    return worst
