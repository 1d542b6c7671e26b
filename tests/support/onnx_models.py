"""Tiny ONNX models with the serving model's signature, built without TensorFlow.

probability = sigmoid(weight * (mean pixel / 255) + bias): a bright image is "malignant",
a dark one "benign", so tests know the right answer for images they draw. With
`class_activation`, the model also says where: each 32x32 cell of the 7x7 grid's
weight * (its mean pixel / 255), whose mean plus the bias is the logit, as the served
model's class activation output is (shared/model/export.py); the bright parts light up.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from shared.settings import REPO_ROOT


def brightness_model(
    weight: float = 12.0, bias: float = -6.0, *, slow: bool = False, class_activation: bool = False
) -> bytes:
    """The brightness model; `slow` adds a convolution whose cost is near MobileNetV2's
    (its result is multiplied by zero), so a batch takes long enough to be interrupted;
    `class_activation` adds that output, (batch, 7, 7)."""
    image = helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", 224, 224, 3])
    output = helper.make_tensor_value_info("probability_malignant", TensorProto.FLOAT, ["batch", 1])
    initializers = [
        numpy_helper.from_array(np.array(weight / 255.0, np.float32), "weight"),
        numpy_helper.from_array(np.array(bias, np.float32), "bias"),
    ]
    nodes = [
        helper.make_node("ReduceMean", ["image"], ["mean"], axes=[1, 2, 3], keepdims=0),
        helper.make_node("Mul", ["mean", "weight"], ["scaled"]),
        helper.make_node("Add", ["scaled", "bias"], ["logit"]),
        helper.make_node("Sigmoid", ["logit"], ["probability"]),
        helper.make_node("Unsqueeze", ["probability", "axes"], ["probability_malignant"]),
    ]
    initializers.append(numpy_helper.from_array(np.array([1], np.int64), "axes"))
    if slow:
        kernel = np.random.default_rng(0).normal(size=(48, 3, 7, 7)).astype(np.float32)
        initializers += [
            numpy_helper.from_array(kernel, "kernel"),
            numpy_helper.from_array(np.array(0.0, np.float32), "zero"),
        ]
        nodes[2:3] = [
            helper.make_node("Transpose", ["image"], ["planar"], perm=[0, 3, 1, 2]),
            helper.make_node("Conv", ["planar", "kernel"], ["features"], pads=[3, 3, 3, 3]),
            helper.make_node("ReduceMean", ["features"], ["feature_mean"], axes=[1, 2, 3], keepdims=0),
            helper.make_node("Mul", ["feature_mean", "zero"], ["nothing"]),
            helper.make_node("Add", ["scaled", "bias"], ["biased"]),
            helper.make_node("Add", ["biased", "nothing"], ["logit"]),
        ]
    outputs = [output]
    if class_activation:
        outputs.append(helper.make_tensor_value_info("class_activation", TensorProto.FLOAT, ["batch", 7, 7]))
        nodes += [
            helper.make_node("ReduceMean", ["image"], ["grey"], axes=[3], keepdims=1),
            helper.make_node("Transpose", ["grey"], ["grey_planar"], perm=[0, 3, 1, 2]),
            helper.make_node("AveragePool", ["grey_planar"], ["cells"], kernel_shape=[32, 32], strides=[32, 32]),
            helper.make_node("Squeeze", ["cells", "axes"], ["cell_means"]),
            helper.make_node("Mul", ["cell_means", "weight"], ["class_activation"]),
        ]
    graph = helper.make_graph(nodes, "brightness", [image], outputs, initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()


def write_models_dir(root: Path, versions: dict[str, bytes], production: str, threshold: float = 0.5) -> Path:
    """Lay out a shipped-models folder (`versions/<v>/`, `aliases/production.json`)."""
    for version, artifact in versions.items():
        folder = root / "versions" / version
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "model.onnx").write_bytes(artifact)
        card = {"version": version, "threshold": threshold, "calibration": None, "serving_artifact": "model.onnx"}
        (folder / "card.json").write_text(json.dumps(card))
    (root / "aliases").mkdir(parents=True, exist_ok=True)
    (root / "aliases" / "production.json").write_text(json.dumps({"version": production}))
    return root


def copy_shipped_production(root: Path) -> Path:
    """A models folder at `root` holding only the shipped production version (from models/)."""
    shipped = REPO_ROOT / "models"
    version = json.loads((shipped / "aliases" / "production.json").read_text())["version"]
    shutil.copytree(shipped / "versions" / version, root / "versions" / version)
    (root / "aliases").mkdir(parents=True)
    shutil.copy(shipped / "aliases" / "production.json", root / "aliases" / "production.json")
    return root
