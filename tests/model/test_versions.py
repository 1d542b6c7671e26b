"""Versions that cannot change: a published version is written once, its card records each
file's SHA-256, a file with other bytes is refused while the worker keeps serving what it has,
a retried promotion keeps the rollback pointer, and a resumed training job does not write its
published version again."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from services.trainer.pipeline import run_training
from services.worker.model_holder import ModelHolder
from shared.model.card import write_version
from shared.serving import registry
from shared.settings import Settings
from shared.storage import FilesystemStore, ObjectStore, layout
from tests.support.network import wait_until
from tests.support.onnx_models import brightness_model

CARD = {"threshold": 0.5, "calibration": None, "serving_artifact": "model.onnx"}


@pytest.fixture
def store(tmp_path: Path) -> ObjectStore:
    return FilesystemStore(tmp_path / "store")


def _publish(store: ObjectStore, version: str, bias: float = -6.0, **card: object) -> bytes:
    artifact = brightness_model(bias=bias)
    registry.publish_version(store, version, {"model.onnx": artifact}, {**CARD, **card})
    return artifact


def _flip_one_byte(store: ObjectStore, version: str, filename: str = "model.onnx") -> None:
    key = layout.model_file(version, filename)
    data = bytearray(store.get(key))
    data[len(data) // 2] ^= 0x01
    store.put(key, bytes(data))


def _refused(version: str) -> float:
    return REGISTRY.get_sample_value("slc_model_artifacts_refused_total", {"version": version}) or 0.0


def test_a_published_version_records_its_hashes_and_is_never_written_again(store: ObjectStore) -> None:
    artifact = _publish(store, "v1")
    card = registry.read_card(store, "v1")
    assert card.artifacts == {"model.onnx": registry.sha256_of(artifact)}
    with pytest.raises(registry.VersionExists):
        _publish(store, "v1", bias=6.0)
    assert store.get(layout.model_file("v1", "model.onnx")) == artifact


def test_an_artifact_with_one_byte_flipped_is_refused_and_counted(store: ObjectStore) -> None:
    _publish(store, "v1")
    _flip_one_byte(store, "v1")
    before = _refused("v1")
    with pytest.raises(registry.ArtifactMismatch, match=r"model\.onnx"):
        registry.load_serving_model(store, "v1")
    assert _refused("v1") == before + 1


def test_a_worker_keeps_serving_its_version_when_the_next_one_is_tampered_with(store: ObjectStore) -> None:
    _publish(store, "v1")
    registry.promote(store, "v1", reason="test")
    holder = ModelHolder(store, threads=1)
    _publish(store, "v2", bias=-5.0)
    _flip_one_byte(store, "v2")
    registry.promote(store, "v2", reason="test")
    holder.swap_in_background("v2")
    wait_until(lambda: holder.refused is not None)
    assert holder.current.version == "v1" and "v2" in holder.refused
    _publish(store, "v3", bias=-4.0)
    holder.swap_in_background("v3")
    wait_until(lambda: holder.current.version == "v3")
    assert holder.refused is None


def test_a_retried_promotion_keeps_the_rollback_pointer(store: ObjectStore) -> None:
    _publish(store, "v1")
    _publish(store, "v2")
    registry.promote(store, "v1", reason="first")
    first = registry.promote(store, "v2", reason="the new one")
    retried = registry.promote(store, "v2", reason="retried after a 503")
    assert first["previous"] == "v1" and retried == first


def test_a_resumed_job_whose_version_is_published_is_not_trained_again(store: ObjectStore, tmp_path: Path) -> None:
    # The store holds no training images: training would fail with BadInput if it were tried.
    _publish(store, "job-1", gate={"passed": True})
    events: list[tuple[str, dict]] = []
    outcome = run_training(
        Settings(store_dir=tmp_path / "store"),
        store,
        "job-1",
        None,
        on_progress=lambda progress: None,
        on_event=lambda name, data: events.append((name, data)),
    )
    assert outcome["status"] == "promoted" and outcome["candidate_version"] == "job-1"
    assert registry.production_version(store) == "job-1"
    assert events == [("model.promoted", {"version": "job-1", "previous": None})]


def test_a_shipped_file_that_is_not_the_one_its_card_recorded_is_not_seeded(store: ObjectStore, tmp_path: Path) -> None:
    models = tmp_path / "models"
    folder = models / "versions" / "v1"
    write_version(folder, {"model.onnx": brightness_model()}, {**CARD, "version": "v1"})
    (models / "aliases").mkdir(parents=True)
    (models / "aliases" / "production.json").write_text(json.dumps({"version": "v1"}))
    assert "model.onnx" in json.loads((folder / "card.json").read_text())["artifacts"]
    (folder / "model.onnx").write_bytes(brightness_model(bias=6.0))
    with pytest.raises(registry.ArtifactMismatch):
        registry.seed_from_directory(store, models)
    assert registry.production_version(store) is None
