"""Where a retraining run starts from: production's weights when they fit."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest

from services.trainer.pipeline import production_weights
from shared.model.architecture import build_model
from shared.model.training import TrainingConfig
from shared.serving import registry
from shared.storage import FilesystemStore

DEFAULT_COLOUR_CONSTANCY = TrainingConfig().colour_constancy


@pytest.fixture(scope="module")
def small_keras_file() -> bytes:
    model = build_model(None, alpha=0.35, colour_constancy=DEFAULT_COLOUR_CONSTANCY)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "model.keras"
        model.save(path)
        return path.read_bytes()


def test_retraining_starts_from_production_weights_when_the_architecture_matches(
    tmp_path: Path, small_keras_file: bytes
) -> None:
    store = FilesystemStore(tmp_path)
    registry.publish_version(store, "v1", {"model.keras": small_keras_file}, {"threshold": 0.5})
    weights, source = production_weights(store, "v1", TrainingConfig.quick())
    assert source == "production v1"
    assert weights is not None and len(weights) == len(build_model(None, alpha=0.35).get_weights())


@pytest.mark.parametrize(
    ("stored", "config", "reason"),
    [
        (False, TrainingConfig.quick(), "has no Keras file"),
        (True, TrainingConfig.quick(alpha=0.5), "another architecture"),
        # Same weights, but a weightless preprocessing layer more or less changes what they mean.
        (True, TrainingConfig.quick(colour_constancy=not DEFAULT_COLOUR_CONSTANCY), "another architecture"),
    ],
)
def test_retraining_falls_back_to_pretrained_weights(
    stored: bool, config: TrainingConfig, reason: str, tmp_path: Path, small_keras_file: bytes
) -> None:
    store = FilesystemStore(tmp_path)
    if stored:
        registry.publish_version(store, "v1", {"model.keras": small_keras_file}, {"threshold": 0.5})
    weights, source = production_weights(store, "v1", config)
    assert weights is None
    assert reason in source


def test_the_first_run_starts_from_pretrained_weights(tmp_path: Path) -> None:
    weights, source = production_weights(FilesystemStore(tmp_path), None, TrainingConfig.quick())
    assert weights is None and source.startswith("pretrained")
