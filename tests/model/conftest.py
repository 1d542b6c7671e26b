"""Fixtures of the model tests: tiny generated image folders laid out like the dataset, and a
tiny model exported to every serving artifact."""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import pytest
from PIL import Image

from shared.model.architecture import build_model
from shared.model.data import LABELS
from shared.model.export import export_artifact
from shared.serving.runtime import LITERT_ARTIFACT, ONNX_ARTIFACT

SERVING_ARTIFACTS = (ONNX_ARTIFACT, LITERT_ARTIFACT)


def write_images(folder: Path, per_class: int, seed: int) -> None:
    """`per_class` small images in each of folder/benign and folder/malignant. Malignant
    ones are darker, so a model has something to learn; sizes vary to exercise resizing."""
    rng = np.random.default_rng(seed)
    for label_index, label in enumerate(LABELS):
        (folder / label).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            size = (int(rng.integers(40, 80)), int(rng.integers(40, 80)))
            base = 180 - 90 * label_index
            pixels = np.clip(rng.normal(base, 25, (*size, 3)), 0, 255).astype(np.uint8)
            suffix = "png" if i % 2 else "jpg"
            Image.fromarray(pixels).save(folder / label / f"{label}_{i}.{suffix}")


@pytest.fixture(scope="session")
def dataset_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A dataset root with train/ (8 images per class) and test/ (6 per class)."""
    root = tmp_path_factory.mktemp("dataset")
    write_images(root / "train", 8, seed=1)
    write_images(root / "test", 6, seed=2)
    return root


@pytest.fixture(scope="session")
def tiny_model() -> keras.Model:
    """`build_model(None, alpha=0.35)` whose outputs differ from image to image.

    With random initialisation the backbone's activations fade to about 1e-10, so every
    output is exactly 0.5 and no runtime difference could show; lower batch-norm variances
    keep them alive (outputs about 0.46-0.48 that vary with the image).
    """
    model = build_model(None, alpha=0.35, seed=3)
    for layer in model.get_layer("mobilenetv2").layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            gamma, beta, mean, variance = layer.get_weights()
            layer.set_weights([gamma, beta, mean, np.full_like(variance, 0.15)])
    return model


@pytest.fixture(scope="session")
def tiny_artifacts(tiny_model: keras.Model) -> dict[str, bytes]:
    """`tiny_model` exported as every serving artifact, by file name."""
    return {name: export_artifact(tiny_model, name) for name in SERVING_ARTIFACTS}


@pytest.fixture(scope="session")
def probe_pixels() -> np.ndarray:
    """Four random 224x224 RGB images in the 0..255 range, float32."""
    return np.random.default_rng(0).integers(0, 256, (4, 224, 224, 3)).astype(np.float32)
