"""The export parity check, in both serving runtimes: it passes on a faithful artifact and
fails on an altered one."""

from __future__ import annotations

import flatbuffers
import numpy as np
import onnx
import pytest
from ai_edge_litert import schema_py_generated as litert_schema
from onnx import numpy_helper

from shared.model.export import ParityError, check_parity, export_artifact
from shared.serving.runtime import LITERT_ARTIFACT, ONNX_ARTIFACT
from tests.model.conftest import SERVING_ARTIFACTS


def _shift_onnx_logit(artifact: bytes, delta: float) -> bytes:
    """Add `delta` to the logit before the final sigmoid: a small, realistic corruption
    (the exporter folds a zero bias away, so an Add node is inserted)."""
    model = onnx.load_from_string(artifact)
    nodes = model.graph.node
    position, sigmoid = next((i, node) for i, node in enumerate(nodes) if node.op_type == "Sigmoid")
    model.graph.initializer.append(numpy_helper.from_array(np.array([delta], np.float32), "tampered_delta"))
    nodes.insert(position, onnx.helper.make_node("Add", [sigmoid.input[0], "tampered_delta"], ["tampered_logit"]))
    sigmoid.input[0] = "tampered_logit"
    return model.SerializeToString()


def _shift_litert_logit(artifact: bytes, delta: float) -> bytes:
    """The same corruption in a LiteRT flatbuffer: the converter folds the output layer's
    zero bias away too, so its FULLY_CONNECTED operator gets a bias tensor holding `delta`."""
    model = litert_schema.ModelT.InitFromPackedBuf(artifact, 0)
    graph = model.subgraphs[0]

    def builtin(operator: litert_schema.OperatorT) -> int:
        code = model.operatorCodes[operator.opcodeIndex]
        return max(code.builtinCode, code.deprecatedBuiltinCode)

    dense = next(op for op in reversed(graph.operators) if builtin(op) == litert_schema.BuiltinOperator.FULLY_CONNECTED)
    buffer = litert_schema.BufferT()
    buffer.data = np.array([delta], np.float32).view(np.uint8)
    model.buffers.append(buffer)
    bias = litert_schema.TensorT()
    bias.shape, bias.type, bias.buffer = [1], litert_schema.TensorType.FLOAT32, len(model.buffers) - 1
    bias.name = b"tampered_bias"
    graph.tensors.append(bias)
    dense.inputs = np.array([*dense.inputs[:2], len(graph.tensors) - 1], np.int32)
    builder = flatbuffers.Builder(0)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


TAMPER = {ONNX_ARTIFACT: _shift_onnx_logit, LITERT_ARTIFACT: _shift_litert_logit}


@pytest.mark.parametrize("name", SERVING_ARTIFACTS)
def test_a_faithful_export_passes_the_parity_check(tiny_model, tiny_artifacts, probe_pixels, name):
    assert check_parity(tiny_model, tiny_artifacts[name], probe_pixels, artifact_name=name) <= 1e-4


@pytest.mark.parametrize("name", SERVING_ARTIFACTS)
@pytest.mark.parametrize("delta", [0.01, 1.0])
def test_an_altered_artifact_fails_the_parity_check(tiny_model, tiny_artifacts, probe_pixels, name, delta):
    altered = TAMPER[name](tiny_artifacts[name], delta)
    with pytest.raises(ParityError, match=name):
        check_parity(tiny_model, altered, probe_pixels, artifact_name=name)


def test_only_known_serving_artifacts_are_exported(tiny_model):
    with pytest.raises(ValueError, match=r"model\.pt"):
        export_artifact(tiny_model, "model.pt")
