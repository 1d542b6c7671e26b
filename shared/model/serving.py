"""The serving runtime: ONNX Runtime on the exported artifact, plus the card's calibration.

Workers import only this (no TensorFlow): start-up is fast and memory small.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnxruntime as ort

from shared.errors import ModelUnavailable

SERVING_ARTIFACT = "model.onnx"


def calibrate(probabilities: np.ndarray, calibration: dict[str, Any] | None) -> np.ndarray:
    """Apply the card's Platt scaling (`sigmoid(a * logit(p) + b)`); identity when absent."""
    if not calibration:
        return probabilities
    if calibration.get("method") != "platt":
        raise ModelUnavailable(f"unknown calibration method {calibration.get('method')!r}")
    clipped = np.clip(probabilities.astype(np.float64), 1e-7, 1 - 1e-7)
    logits = np.log(clipped / (1 - clipped))
    return (1.0 / (1.0 + np.exp(-(calibration["a"] * logits + calibration["b"])))).astype(np.float32)


@dataclass
class ServingModel:
    """One loaded model version: raw ONNX session, its threshold and calibration."""

    version: str
    threshold: float
    calibration: dict[str, Any] | None
    session: ort.InferenceSession

    @classmethod
    def from_bytes(cls, version: str, artifact: bytes, card: dict[str, Any], *, threads: int = 0) -> ServingModel:
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or (os.cpu_count() or 1)
        options.inter_op_num_threads = 1
        # Spinning intra-op threads burn CPU that the gateway, the broker and other workers
        # need: turning it off doubled end-to-end throughput here (docs/performance.md).
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        try:
            session = ort.InferenceSession(artifact, options, providers=["CPUExecutionProvider"])
        except Exception as error:  # onnxruntime raises its own untyped errors on bad files
            raise ModelUnavailable(f"model {version} does not load in ONNX Runtime: {error}") from error
        return cls(version, float(card["threshold"]), card.get("calibration"), session)

    def predict_raw(self, pixels: np.ndarray) -> np.ndarray:
        """Uncalibrated model output for a uint8 or float batch (N, 224, 224, 3)."""
        feed = {self.session.get_inputs()[0].name: pixels.astype(np.float32, copy=False)}
        try:
            return self.session.run(None, feed)[0].reshape(-1)
        except Exception as error:  # onnxruntime's errors share no importable base class
            raise ModelUnavailable(f"model {self.version} failed to run: {error}") from error

    def predict(self, pixels: np.ndarray) -> np.ndarray:
        """Calibrated probability of malignant for each image of the batch."""
        return calibrate(self.predict_raw(pixels), self.calibration)

    def label(self, probability: float) -> str:
        return "malignant" if probability >= self.threshold else "benign"
