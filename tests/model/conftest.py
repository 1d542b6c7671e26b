"""Fixtures of the model tests: tiny generated image folders laid out like the dataset."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from shared.model.data import LABELS


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
