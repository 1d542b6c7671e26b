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
from shared.model.architecture import BACKBONE_NAME, OUTPUT_NAME
from shared.serving.card import ONNX_ARTIFACT, SERVING_ARTIFACT
from shared.serving.domain import BLOCKS
from shared.serving.runtime import LITERT_ARTIFACT, ServingModel

PARITY_TOLERANCE = 1e-4


class ParityError(PermanentError):
    """Raised when the serving artifact's outputs differ from the Keras model's."""

    code = "parity_failed"


def serving_graph(model: keras.Model) -> keras.Model:
    """The classifier with the two outputs trust needs beside the probability, same weights.

    - block statistics: the channel mean and standard deviation of each of MobileNetV2's
      blocks 5-12 (its `block_N_project_BN` outputs), concatenated block by block: what the
      out-of-domain score is computed from (shared/serving/domain.py);
    - class activation: the output layer's weights applied at each of the last feature map's
      7x7 locations (no gradients): each location's share of the malignant logit, whose mean
      plus the bias is the logit itself. The heat map is drawn from it.

    Dropout is left out: it does nothing at inference.
    """
    backbone = model.get_layer(BACKBONE_NAME)
    blocks = [backbone.get_layer(f"block_{index}_project_BN").output for index in BLOCKS]
    inner = keras.Model(backbone.input, [*blocks, backbone.output], name="backbone_with_blocks")
    image = model.input
    preprocessed = image
    for layer in model.layers[1 : model.layers.index(backbone)]:
        preprocessed = layer(preprocessed)
    *block_maps, features = inner(preprocessed)
    per_block = [(keras.ops.mean(block, axis=(1, 2)), keras.ops.std(block, axis=(1, 2))) for block in block_maps]
    statistics = keras.layers.Concatenate(name="block_statistics")([part for pair in per_block for part in pair])
    head = model.get_layer(OUTPUT_NAME)
    probability = head(model.get_layer("pool")(features))
    per_location = keras.layers.Dense(1, use_bias=False, name="class_activation_logits")
    activation = keras.layers.Reshape(tuple(features.shape[1:3]), name="class_activation")(per_location(features))
    per_location.set_weights([head.get_weights()[0]])
    return keras.Model(image, [probability, statistics, activation], name="served_classifier")


def block_statistic_widths(model: keras.Model) -> list[int]:
    """How many block statistics each block contributes (mean and std of each channel)."""
    backbone = model.get_layer(BACKBONE_NAME)
    return [2 * int(backbone.get_layer(f"block_{index}_project_BN").output.shape[-1]) for index in BLOCKS]


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
