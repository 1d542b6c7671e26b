"""A tampered model version on real parts: promoted through the gateway, it is refused by a
worker process, which says so on /readyz and /metrics and keeps answering with the version it
has; promoting it again leaves the rollback pointer where it was."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import requests

from shared.serving import registry
from shared.settings import Settings
from shared.storage import create_store, layout
from tests.support.images import solid_jpeg
from tests.support.onnx_models import brightness_model
from tests.support.system import running_system, system_env

TOKEN = "trusted-versions-token"


def _readyz(port: int) -> dict:
    return requests.get(f"http://127.0.0.1:{port}/readyz", timeout=5).json()


def test_a_worker_refuses_a_tampered_version_and_keeps_serving_its_own(
    s3_settings: Settings, models_dir: Path, output_dir: Path, request: pytest.FixtureRequest
) -> None:
    env = system_env(s3_settings, models_dir, write_token=TOKEN)
    with running_system(env, output_dir / "logs" / request.node.name, worker=True, gateway=True) as running:
        worker_port = running.services[0].port
        store = create_store(s3_settings)
        # A version that would call the bright test image benign, with one byte of its artifact flipped.
        registry.publish_version(
            store, "test-v2", {"model.onnx": brightness_model(bias=-20.0)}, {"threshold": 0.5, "calibration": None}
        )
        key = layout.model_file("test-v2", "model.onnx")
        tampered = bytearray(store.get(key))
        tampered[len(tampered) // 2] ^= 0x01
        store.put(key, bytes(tampered))

        headers = {"Authorization": f"Bearer {TOKEN}"}
        promote_url = f"{running.gateway_url}/api/v1/models/test-v2/promote"
        first = requests.post(promote_url, headers=headers, timeout=10)
        assert first.status_code == 200, first.text
        deadline = time.monotonic() + 30
        while "refused_model" not in _readyz(worker_port)["checks"]:
            assert time.monotonic() < deadline, "the worker never reported the refused version"
            time.sleep(0.2)
        readiness = _readyz(worker_port)
        assert readiness["ready"] is True and readiness["checks"]["model"] == "test-v1"
        assert "test-v2" in readiness["checks"]["refused_model"] and "SHA-256" in readiness["checks"]["refused_model"]

        answer = requests.post(
            f"{running.gateway_url}/api/v1/predictions", files={"file": ("x.jpg", solid_jpeg(230))}, timeout=30
        ).json()
        assert answer["model_version"] == "test-v1" and answer["label"] == "malignant"
        metrics_text = requests.get(f"http://127.0.0.1:{worker_port}/metrics", timeout=5).text
        assert 'slc_model_artifacts_refused_total{version="test-v2"}' in metrics_text

        retried = requests.post(promote_url, headers=headers, timeout=10)
        assert retried.status_code == 200 and retried.json()["previous"] == first.json()["previous"] == "test-v1"
