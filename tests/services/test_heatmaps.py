"""Heat maps on real parts: the gateway and workers as processes, RabbitMQ, the S3 endpoint.

The served model is the brightness test model with a class activation output: the bright part
of an image is where it "sees" malignancy, so the test knows where the map must light up.
"""

from __future__ import annotations

import io
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
import requests
from PIL import Image

from services.worker.heatmaps import HeatmapRenderer
from shared.errors import Gone
from shared.messaging.heatmaps import HeatmapRequest
from shared.messaging.topology import Topology
from shared.retention import DAY_S, RetentionPolicy, sweep
from shared.settings import Settings
from shared.storage import FilesystemStore, ObjectStore, create_store, layout, put_json
from tests.support.images import encode
from tests.support.onnx_models import brightness_model, write_models_dir
from tests.support.system import RunningSystem, system_env

SIZE = (600, 450)
# Dark, with a bright block over the top-left cell of the 7x7 grid (86x64 pixels at 600x450).
BRIGHT_CORNER = (slice(0, 64), slice(0, 86))


def lesion_jpeg() -> bytes:
    pixels = np.full((SIZE[1], SIZE[0], 3), 30, np.uint8)
    pixels[BRIGHT_CORNER] = 240
    return encode(Image.fromarray(pixels), quality=95)


def decoded(png: bytes) -> np.ndarray:
    image = Image.open(io.BytesIO(png))
    assert image.format == "PNG"
    return np.asarray(image.convert("RGB"), dtype=np.int16)


@pytest.fixture
def heat_models(tmp_path: Path) -> Path:
    return write_models_dir(tmp_path / "models", {"heat-v1": brightness_model(class_activation=True)}, "heat-v1")


def start(settings: Settings, models: Path, log_dir: Path, *, worker: bool = True, **env: object) -> RunningSystem:
    log_dir.mkdir(parents=True, exist_ok=True)
    running = RunningSystem(system_env(settings, models, **env), log_dir)
    if worker:
        running.start_worker()
    running.start_gateway()
    return running


@pytest.fixture
def system(
    s3_settings: Settings, heat_models: Path, output_dir: Path, request: pytest.FixtureRequest
) -> Iterator[RunningSystem]:
    running = start(s3_settings, heat_models, output_dir / "logs" / request.node.name)
    try:
        yield running
    finally:
        running.stop()


def predict(system: RunningSystem, image: bytes, *, wait: bool = True) -> requests.Response:
    return requests.post(
        f"{system.gateway_url}/api/v1/predictions",
        params={} if wait else {"wait": "false"},
        files={"file": ("lesion.jpg", image, "image/jpeg")},
        timeout=60,
    )


def heatmap(system: RunningSystem, job_id: str) -> requests.Response:
    return requests.get(f"{system.gateway_url}/api/v1/predictions/{job_id}/heatmap", timeout=60)


def test_a_worker_draws_the_heat_map_where_the_model_looked_and_the_gateway_serves_it(
    system: RunningSystem, s3_settings: Settings
) -> None:
    image = lesion_jpeg()
    job_id = predict(system, image).json()["id"]
    store = create_store(s3_settings)
    assert not store.exists(layout.prediction_heatmap(job_id)), "drawn on request only"

    response = heatmap(system, job_id)
    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"] == "image/png"
    assert response.headers["Cache-Control"] == "no-store"
    drawn = decoded(response.content)
    upload = decoded(encode(Image.open(io.BytesIO(image)), "PNG"))
    assert drawn.shape == (SIZE[1], SIZE[0], 3), "at the stored image's size"
    # Coloured over the bright corner; the dark rest, with an eighth of its evidence, only tinted.
    assert np.abs(drawn[10:50, 10:70] - upload[10:50, 10:70]).mean() > 40
    assert np.abs(drawn[200:, 300:] - upload[200:, 300:]).max() < 10
    assert store.get(layout.prediction_heatmap(job_id)) == response.content

    system.services[0].stop()  # the worker: a second request is served from the store
    again = heatmap(system, job_id)
    assert again.status_code == 200 and again.content == response.content


def test_a_deleted_predictions_heat_map_is_gone_with_it(system: RunningSystem, s3_settings: Settings) -> None:
    job_id = predict(system, lesion_jpeg()).json()["id"]
    assert heatmap(system, job_id).status_code == 200
    store = create_store(s3_settings)
    assert store.exists(layout.prediction_heatmap(job_id))

    assert requests.delete(f"{system.gateway_url}/api/v1/predictions/{job_id}", timeout=10).status_code == 204
    assert not store.exists(layout.prediction_heatmap(job_id))
    gone = heatmap(system, job_id)
    assert gone.status_code == 410 and gone.json()["error"]["code"] == "gone"
    assert not store.exists(layout.prediction_heatmap(job_id)), "nothing drawn again for a deleted prediction"


def test_the_retention_sweep_removes_the_heat_map_with_the_rest(system: RunningSystem, s3_settings: Settings) -> None:
    job_id = predict(system, lesion_jpeg()).json()["id"]
    assert heatmap(system, job_id).status_code == 200
    store = create_store(s3_settings)
    sweep(store, RetentionPolicy(days=30), now=time.time() + 30 * DAY_S + 60)
    assert not store.exists(layout.prediction_heatmap(job_id))
    assert list(store.list("results/")) == [] and list(store.list("uploads/")) == []


@pytest.mark.system
def test_unknown_malformed_pending_and_older_versions_predictions_get_clear_errors(
    s3_settings: Settings, models_dir: Path, output_dir: Path
) -> None:
    """models_dir serves test-v1, the brightness model without a class activation output."""
    running = start(s3_settings, models_dir, output_dir / "logs" / "heatmap-errors", worker=False)
    try:
        unknown = heatmap(running, f"{datetime.now(UTC):%Y%m%d}-{'0' * 32}")  # of a day not yet expired
        assert (unknown.status_code, unknown.json()["error"]["code"]) == (404, "not_found")
        assert heatmap(running, "not-an-id").status_code == 400

        pending_id = predict(running, lesion_jpeg(), wait=False).json()["id"]
        pending = heatmap(running, pending_id)
        assert pending.status_code == 409 and "still pending" in pending.json()["error"]["message"]

        running.start_worker()
        older_id = predict(running, lesion_jpeg()).json()["id"]
        older = heatmap(running, older_id)
        assert older.status_code == 409
        assert older.json()["error"] == {
            "code": "heatmap_unavailable",
            "message": "the heat map is not available for model version test-v1: it has no class activation"
            " output (versions trained since heat maps were added have one)",
        }
    finally:
        running.stop()


@pytest.mark.system
def test_with_no_worker_to_draw_it_the_client_gets_503_and_the_request_is_drawn_later(
    s3_settings: Settings, heat_models: Path, output_dir: Path
) -> None:
    running = start(s3_settings, heat_models, output_dir / "logs" / "heatmap-timeout", predict_timeout_s=3)
    try:
        job_id = predict(running, lesion_jpeg()).json()["id"]
        running.services[0].stop()
        late = heatmap(running, job_id)
        assert late.status_code == 503 and late.headers["Retry-After"]
        assert late.json()["error"]["code"] == "heatmap_timeout"
        running.start_worker()  # takes the request still queued, and draws it
        store = create_store(s3_settings)
        deadline = time.monotonic() + 30
        while not store.exists(layout.prediction_heatmap(job_id)) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert heatmap(running, job_id).status_code == 200
    finally:
        running.stop()


class DeletedWhileDrawing(FilesystemStore):
    """A store in which the prediction is deleted (tombstone first) just as its heat map is written."""

    def put(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> None:
        super().put(key, data, content_type)
        if key.startswith(layout.PREDICTION_HEATMAPS_PREFIX):
            job_id = key.rpartition("/")[2].removesuffix(".png")
            put_json(self, layout.prediction_tombstone(job_id), {"id": job_id, "reason": "deleted on request"})


def test_a_heat_map_drawn_while_its_prediction_is_deleted_is_not_kept(tmp_path: Path) -> None:
    store: ObjectStore = DeletedWhileDrawing(tmp_path / "store")
    job_id = f"{datetime.now(UTC):%Y%m%d}-{'a' * 32}"
    image_key = layout.prediction_upload(job_id, "jpg", datetime.now(UTC))
    store.put(image_key, lesion_jpeg())
    grid = np.zeros((7, 7))
    grid[0, 0] = 1.0
    put_json(
        store,
        layout.prediction_result(job_id),
        {"job_id": job_id, "label": "benign", "model_version": "heat-v1", "class_activation": grid.tolist()},
    )
    renderer = HeatmapRenderer(Settings(), store, Topology.from_settings(Settings()), pool=None)  # type: ignore[arg-type]
    with pytest.raises(Gone):
        renderer.render(HeatmapRequest(job_id=job_id, image_key=image_key, requested_at=time.time()))
    assert not store.exists(layout.prediction_heatmap(job_id))
