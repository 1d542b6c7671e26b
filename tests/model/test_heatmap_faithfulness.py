"""The served heat map is faithful (issue 23's test on real images): on correctly classified
malignant ISIC 2018 test images, removing the 20% of the image it marks highest lowers
p(malignant) more than removing a random 20% for at least 70% of them, and its map matches a
Grad-CAM from the Keras model with correlation >= 0.99.

The production version shipped in models/ is served as a worker serves it (its LiteRT
artifact); the images are read from DATASETS_DIR (default ../shared/datasets beside the
checkout), and their absence fails the test rather than skipping it.
"""

from __future__ import annotations

import json
from pathlib import Path

import keras
import numpy as np
import pytest

from shared.images import model_input_from_bytes
from shared.model import architecture  # noqa: F401  (registers the model's own layer for loading)
from shared.model.faithfulness import deletion_test, grad_cam, map_correlations
from shared.serving.runtime import ServingModel
from shared.settings import REPO_ROOT, Settings

DATASETS = Settings.from_env().datasets_dir
MALIGNANT_TEST_IMAGES = DATASETS / "ham10000" / "test" / "malignant"
# Enough for the shares to mean something, few enough for a minute of CPU.
IMAGES = 100
LIMITS = {"max_bytes": 50 * 2**20, "max_pixels": 100_000_000}


@pytest.fixture(scope="module")
def production_folder() -> Path:
    version = json.loads((REPO_ROOT / "models" / "aliases" / "production.json").read_text())["version"]
    return REPO_ROOT / "models" / "versions" / version


@pytest.fixture(scope="module")
def served(production_folder: Path) -> ServingModel:
    card = json.loads((production_folder / "card.json").read_text())
    artifact = (production_folder / card["serving_artifact"]).read_bytes()
    return ServingModel.from_bytes(card["version"], artifact, card, threads=2)


@pytest.fixture(scope="module")
def correct_malignant(served: ServingModel) -> tuple[np.ndarray, np.ndarray]:
    """The first IMAGES malignant test images the served model calls malignant: pixels, class activations."""
    paths = sorted(MALIGNANT_TEST_IMAGES.glob("*.jpg"))
    if len(paths) < IMAGES:
        pytest.fail(f"expected ISIC 2018 test images in {MALIGNANT_TEST_IMAGES} (set DATASETS_DIR); found {len(paths)}")
    threshold, _ = served.threshold_for(None)
    pixels, activations = [], []
    for start in range(0, len(paths), 32):
        batch = np.stack([model_input_from_bytes(path.read_bytes(), **LIMITS) for path in paths[start : start + 32]])
        outputs = served.run(batch)
        if outputs.class_activation is None:
            pytest.fail(f"production version {served.version} has no class activation output")
        chosen = served.probabilities(outputs) >= threshold
        pixels.extend(batch[chosen])
        activations.extend(outputs.class_activation[chosen])
        if len(pixels) >= IMAGES:
            break
    return np.stack(pixels[:IMAGES]), np.stack(activations[:IMAGES])


def test_removing_what_the_map_marks_lowers_p_malignant_more_than_removing_a_random_fifth(
    served: ServingModel, correct_malignant: tuple[np.ndarray, np.ndarray]
) -> None:
    pixels, activations = correct_malignant
    result = deletion_test(served, pixels, activations)
    assert result.map_beats_random.mean() >= 0.70
    assert np.median(result.original - result.after_map) > np.median(result.original - result.after_random)


def test_the_served_map_is_the_keras_models_grad_cam(
    production_folder: Path, correct_malignant: tuple[np.ndarray, np.ndarray]
) -> None:
    pixels, activations = correct_malignant
    model = keras.saving.load_model(production_folder / "model.keras", compile=False)
    reference = np.concatenate([grad_cam(model, pixels[start : start + 32]) for start in range(0, len(pixels), 32)])
    assert map_correlations(activations, reference).min() >= 0.99
