"""The serving runtime: ONNX Runtime or LiteRT on the exported artifact, plus the card's
calibration.

The card's `serving_artifact` names the file a version is served from, and its name picks
the runtime: `model.onnx` runs in ONNX Runtime, `model.tflite` in the LiteRT interpreter.
Workers import only this (no TensorFlow): start-up is fast and memory small.

An artifact packaged since issue 23 has two more outputs than the probability (block
statistics for the out-of-domain score, class activation for the heat map; see
`shared/model/export.serving_graph`); an older one has the probability only, and its
answers say the rest is not available.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import onnxruntime as ort
from ai_edge_litert.interpreter import Interpreter

from shared.errors import ModelUnavailable
from shared.serving.card import ONNX_ARTIFACT, ModelCard
from shared.serving.domain import DomainJudgement, DomainModel

LITERT_ARTIFACT = "model.tflite"
# The SERVING_RUNTIME setting's values and the artifact each one serves.
RUNTIME_ARTIFACTS = {"onnxruntime": ONNX_ARTIFACT, "litert": LITERT_ARTIFACT}


def artifact_for_runtime(runtime: str) -> str:
    """The artifact file name that `runtime` (a SERVING_RUNTIME value) serves."""
    try:
        return RUNTIME_ARTIFACTS[runtime]
    except KeyError:
        raise ValueError(
            f"unknown serving runtime {runtime!r}; expected one of {', '.join(RUNTIME_ARTIFACTS)}"
        ) from None


def calibrate(probabilities: np.ndarray, calibration: dict[str, Any] | None) -> np.ndarray:
    """Apply the card's Platt scaling (`sigmoid(a * logit(p) + b)`); identity when absent."""
    if not calibration:
        return probabilities
    if calibration.get("method") != "platt":
        raise ModelUnavailable(f"unknown calibration method {calibration.get('method')!r}")
    clipped = np.clip(probabilities.astype(np.float64), 1e-7, 1 - 1e-7)
    logits = np.log(clipped / (1 - clipped))
    return (1.0 / (1.0 + np.exp(-(calibration["a"] * logits + calibration["b"])))).astype(np.float32)


class Runtime(Protocol):
    """A loaded artifact: float32 batch (N, 224, 224, 3) in, every output of the model out."""

    name: str

    def run(self, batch: np.ndarray) -> list[np.ndarray]: ...


@dataclass(frozen=True)
class ModelOutputs:
    """One batch through the artifact: the probability, and what older artifacts lack (None)."""

    raw: np.ndarray  # (N,) uncalibrated probability of malignant
    block_statistics: np.ndarray | None  # (N, features): what the domain score is computed from
    class_activation: np.ndarray | None  # (N, 7, 7): each location's share of the malignant logit

    @classmethod
    def from_runtime(cls, outputs: list[np.ndarray]) -> ModelOutputs:
        """Name the outputs by their shapes: runtimes do not keep Keras's output order."""
        by_rank: dict[str, np.ndarray] = {}
        for output in outputs:
            if output.ndim == 2 and output.shape[1] == 1:
                by_rank["raw"] = output.reshape(-1)
            elif output.ndim == 2:
                by_rank["block_statistics"] = output
            elif output.ndim == 3:
                by_rank["class_activation"] = output
        if "raw" not in by_rank:
            raise ValueError(f"no probability among the outputs {[output.shape for output in outputs]}")
        return cls(by_rank["raw"], by_rank.get("block_statistics"), by_rank.get("class_activation"))


class OnnxRuntime:
    name = "onnxruntime"

    def __init__(self, artifact: bytes, threads: int) -> None:
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        # Spinning intra-op threads burn CPU that the gateway, the broker and other workers
        # need: turning it off, with the thread and batch settings, gave 1.5-2.3x end-to-end
        # throughput here (docs/history/performance-runs.md).
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self._session = ort.InferenceSession(artifact, options, providers=["CPUExecutionProvider"])
        self._input = self._session.get_inputs()[0].name

    def run(self, batch: np.ndarray) -> list[np.ndarray]:
        return self._session.run(None, {self._input: batch})


class LiteRtRuntime:
    """The LiteRT interpreter. It is not thread-safe, so one batch runs at a time; its input
    is resized (and memory re-planned) only when the batch size changes."""

    name = "litert"

    def __init__(self, artifact: bytes, threads: int) -> None:
        self._interpreter = Interpreter(model_content=artifact, num_threads=threads)
        self._interpreter.allocate_tensors()  # a model with unsupported operators fails here
        self._input = self._interpreter.get_input_details()[0]
        self._outputs = [detail["index"] for detail in self._interpreter.get_output_details()]
        self._batch_size = int(self._input["shape"][0])
        self._lock = threading.Lock()

    def run(self, batch: np.ndarray) -> list[np.ndarray]:
        with self._lock:
            if len(batch) != self._batch_size:
                # Only the batch dimension changes: a wrong image size fails in set_tensor.
                self._interpreter.resize_tensor_input(self._input["index"], [len(batch), *self._input["shape"][1:]])
                self._interpreter.allocate_tensors()
                self._batch_size = len(batch)
            self._interpreter.set_tensor(self._input["index"], np.ascontiguousarray(batch))
            self._interpreter.invoke()
            return [self._interpreter.get_tensor(index) for index in self._outputs]  # copies, safe after the lock


_RUNTIMES: dict[str, type[OnnxRuntime] | type[LiteRtRuntime]] = {
    ONNX_ARTIFACT: OnnxRuntime,
    LITERT_ARTIFACT: LiteRtRuntime,
}


@dataclass
class ServingModel:
    """One loaded model version: its runtime, thresholds, calibration and domain statistics."""

    version: str
    threshold: float
    calibration: dict[str, Any] | None
    runtime: Runtime
    # Thresholds chosen for the collections that had enough cases (card.operating_point).
    collection_thresholds: dict[str, float] = field(default_factory=dict)
    # Fitted when the version was packaged (shared/serving/domain.py); None for older versions.
    domain: DomainModel | None = None

    @classmethod
    def from_bytes(
        cls,
        version: str,
        artifact: bytes,
        card: ModelCard | dict[str, Any],
        *,
        threads: int = 0,
        domain: DomainModel | None = None,
    ) -> ServingModel:
        """Load `artifact` in the runtime its card's `serving_artifact` names (default ONNX).

        `threads` is the runtime's thread count, 0 meaning one per core.
        """
        card = ModelCard.of(card)
        name = card.serving_artifact
        runtime_class = _RUNTIMES.get(name)
        if runtime_class is None:
            raise ModelUnavailable(
                f"model {version} has serving artifact {name!r}; workers serve only {' or '.join(_RUNTIMES)}"
            )
        try:
            runtime = runtime_class(artifact, threads or (os.cpu_count() or 1))
        except Exception as error:  # both runtimes raise their own untyped errors on bad files
            raise ModelUnavailable(
                f"model {version} ({name}) does not load in {runtime_class.name}: {error}"
            ) from error
        return cls(version, card.threshold, card.calibration, runtime, dict(card.collection_thresholds), domain)

    def run(self, pixels: np.ndarray) -> ModelOutputs:
        """Every output of the artifact for a uint8 or float batch (N, 224, 224, 3)."""
        try:
            return ModelOutputs.from_runtime(self.runtime.run(pixels.astype(np.float32, copy=False)))
        except Exception as error:  # the runtimes' errors share no importable base class
            raise ModelUnavailable(f"model {self.version} failed to run in {self.runtime.name}: {error}") from error

    def predict_raw(self, pixels: np.ndarray) -> np.ndarray:
        """Uncalibrated model output for a uint8 or float batch (N, 224, 224, 3)."""
        return self.run(pixels).raw

    def predict(self, pixels: np.ndarray) -> np.ndarray:
        """Calibrated probability of malignant for each image of the batch."""
        return self.probabilities(self.run(pixels))

    def probabilities(self, outputs: ModelOutputs) -> np.ndarray:
        """The calibrated probabilities of a batch's outputs."""
        return calibrate(outputs.raw, self.calibration)

    def judge_domain(self, outputs: ModelOutputs) -> list[DomainJudgement] | None:
        """Each image's domain judgement; None when the version has no domain statistics."""
        if self.domain is None or outputs.block_statistics is None:
            return None
        return self.domain.judge(outputs.block_statistics)

    def threshold_for(self, collection: str | None) -> tuple[float, str | None]:
        """(threshold, the collection it belongs to): the collection's own when it has one,
        else (global threshold, None)."""
        if collection and collection in self.collection_thresholds:
            return self.collection_thresholds[collection], collection
        return self.threshold, None

    def label(self, probability: float, threshold: float | None = None) -> str:
        return "malignant" if probability >= (self.threshold if threshold is None else threshold) else "benign"
