"""ServingModel in both runtimes: each artifact gives Keras's outputs, the card picks the
runtime, and an artifact that cannot be served is reported as unavailable."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from shared.errors import ModelUnavailable
from shared.serving.runtime import LITERT_ARTIFACT, ONNX_ARTIFACT, RUNTIME_ARTIFACTS, ServingModel
from shared.settings import SERVING_RUNTIMES
from tests.model.conftest import SERVING_ARTIFACTS

RUNTIME_OF = {ONNX_ARTIFACT: "onnxruntime", LITERT_ARTIFACT: "litert"}


def _served(artifact: bytes, name: str) -> ServingModel:
    return ServingModel.from_bytes("v1", artifact, {"threshold": 0.5, "serving_artifact": name}, threads=1)


@pytest.mark.parametrize("name", SERVING_ARTIFACTS)
def test_each_runtime_gives_the_keras_outputs_whatever_the_batch_size(tiny_model, tiny_artifacts, probe_pixels, name):
    served = _served(tiny_artifacts[name], name)
    expected = tiny_model.predict(probe_pixels, verbose=0).reshape(-1)
    assert served.runtime.name == RUNTIME_OF[name]
    assert np.ptp(expected) > 1e-3  # the outputs vary, so a runtime difference would show
    for size in (4, 1, 3, 4):  # the LiteRT input is resized whenever the batch size changes
        assert np.max(np.abs(served.predict_raw(probe_pixels[:size]) - expected[:size])) <= 1e-4
    assert np.max(np.abs(served.predict_raw(probe_pixels.astype(np.uint8)) - expected)) <= 1e-4
    assert served.predict_raw(probe_pixels[:0]).shape == (0,)


def test_a_card_without_serving_artifact_is_served_by_onnx_runtime(tiny_artifacts):
    served = ServingModel.from_bytes("v1", tiny_artifacts[ONNX_ARTIFACT], {"threshold": 0.5})
    assert served.runtime.name == "onnxruntime"


def test_litert_answers_concurrent_batches_of_different_sizes_correctly(tiny_model, tiny_artifacts, probe_pixels):
    served = _served(tiny_artifacts[LITERT_ARTIFACT], LITERT_ARTIFACT)
    expected = tiny_model.predict(probe_pixels, verbose=0).reshape(-1)
    errors: list[float] = []

    def client(size: int) -> None:
        for _ in range(5):
            errors.append(float(np.max(np.abs(served.predict_raw(probe_pixels[:size]) - expected[:size]))))

    threads = [threading.Thread(target=client, args=(size,)) for size in (1, 2, 3, 4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(errors) == 20 and max(errors) <= 1e-4


def test_an_unknown_serving_artifact_is_unavailable(tiny_artifacts):
    with pytest.raises(ModelUnavailable, match=r"model\.pt"):
        _served(tiny_artifacts[ONNX_ARTIFACT], "model.pt")


@pytest.mark.parametrize("name", SERVING_ARTIFACTS)
def test_garbage_bytes_are_unavailable(name):
    with pytest.raises(ModelUnavailable, match=RUNTIME_OF[name]):
        _served(b"not a model at all", name)


def test_an_artifact_named_for_the_other_runtime_is_unavailable(tiny_artifacts):
    with pytest.raises(ModelUnavailable):
        _served(tiny_artifacts[LITERT_ARTIFACT], ONNX_ARTIFACT)
    with pytest.raises(ModelUnavailable):
        _served(tiny_artifacts[ONNX_ARTIFACT], LITERT_ARTIFACT)


def test_every_serving_runtime_setting_has_an_artifact():
    assert set(RUNTIME_ARTIFACTS) == set(SERVING_RUNTIMES)
    assert set(RUNTIME_ARTIFACTS.values()) == set(SERVING_ARTIFACTS)
