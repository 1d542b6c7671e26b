"""Export a Keras model to the serving artifact (ONNX) and prove the two agree."""

from __future__ import annotations

import tempfile
from pathlib import Path

import keras
import numpy as np

from shared.errors import PermanentError
from shared.model.serving import ServingModel

PARITY_TOLERANCE = 1e-4


class ParityError(PermanentError):
    """Raised when the serving artifact's outputs differ from the Keras model's."""

    code = "parity_failed"


def export_onnx(model: keras.Model) -> bytes:
    """Convert `model` to ONNX with a dynamic batch dimension; return the file's bytes."""
    # Keras refuses to export a model that has never been called (its shapes are unbuilt).
    model.predict(np.zeros((1, *model.input_shape[1:]), np.float32), verbose=0)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "model.onnx"
        model.export(str(path), format="onnx", verbose=False)
        return path.read_bytes()


def check_parity(
    model: keras.Model,
    artifact: bytes,
    pixels: np.ndarray,
    *,
    tolerance: float = PARITY_TOLERANCE,
    batch_size: int = 32,
) -> float:
    """Compare raw outputs on `pixels`; return the largest difference or raise ParityError."""
    served = ServingModel.from_bytes("parity-check", artifact, {"threshold": 0.5})
    worst = 0.0
    for start in range(0, len(pixels), batch_size):
        batch = pixels[start : start + batch_size].astype(np.float32)
        expected = model.predict(batch, verbose=0).reshape(-1)
        worst = max(worst, float(np.max(np.abs(served.predict_raw(batch) - expected))))
    if worst > tolerance:
        raise ParityError(f"serving artifact differs from Keras by {worst:.2e} (tolerance {tolerance:.0e})")
    return worst
