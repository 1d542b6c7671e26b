"""The export parity check: it passes on a faithful artifact and fails on an altered one."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from shared.model.architecture import build_model
from shared.model.export import ParityError, check_parity, export_onnx


@pytest.fixture(scope="module")
def model_and_artifact():
    model = build_model(None, alpha=0.35, seed=3)
    return model, export_onnx(model)


@pytest.fixture(scope="module")
def pixels() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (4, 224, 224, 3)).astype(np.float32)


def _shift_output_logit(artifact: bytes, delta: float) -> bytes:
    """Add `delta` to the logit before the final sigmoid: a small, realistic corruption
    (the exporter folds a zero bias away, so an Add node is inserted)."""
    model = onnx.load_from_string(artifact)
    nodes = model.graph.node
    position, sigmoid = next((i, node) for i, node in enumerate(nodes) if node.op_type == "Sigmoid")
    model.graph.initializer.append(numpy_helper.from_array(np.array([delta], np.float32), "tampered_delta"))
    nodes.insert(position, onnx.helper.make_node("Add", [sigmoid.input[0], "tampered_delta"], ["tampered_logit"]))
    sigmoid.input[0] = "tampered_logit"
    return model.SerializeToString()


def test_a_faithful_export_passes_the_parity_check(model_and_artifact, pixels):
    model, artifact = model_and_artifact
    assert check_parity(model, artifact, pixels) <= 1e-4


@pytest.mark.parametrize("delta", [0.01, 1.0])
def test_an_altered_artifact_fails_the_parity_check(model_and_artifact, pixels, delta):
    model, artifact = model_and_artifact
    with pytest.raises(ParityError):
        check_parity(model, _shift_output_logit(artifact, delta), pixels)
