"""End to end on real parts: gateway and workers as processes, RabbitMQ, an S3 endpoint."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests

from shared.settings import Settings
from shared.storage import create_store
from tests.support.images import grainy_jpeg, solid_jpeg
from tests.support.onnx_models import brightness_model, write_models_dir
from tests.support.system import RunningSystem, system_env


@pytest.fixture
def system(
    s3_settings: Settings, models_dir: Path, tmp_path: Path, output_dir: Path, request: pytest.FixtureRequest
) -> Iterator[RunningSystem]:
    log_dir = output_dir / "logs" / request.node.name
    log_dir.mkdir(parents=True, exist_ok=True)
    running = RunningSystem(system_env(s3_settings, models_dir, worker_max_batch=8), log_dir)
    try:
        yield running
    finally:
        running.stop()


def predict(url: str, image: bytes, name: str = "lesion.jpg") -> requests.Response:
    return requests.post(f"{url}/api/v1/predictions", files={"file": (name, image, "image/jpeg")}, timeout=60)


def test_one_prediction_is_answered_and_leaves_image_and_result_in_the_store(
    system: RunningSystem, s3_settings: Settings
) -> None:
    system.start_worker()
    system.start_gateway()
    response = predict(system.gateway_url, solid_jpeg(230))
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["label"] == "malignant"
    assert answer["probability_malignant"] == pytest.approx(0.992, abs=0.01)
    assert answer["threshold"] == 0.5
    assert answer["model_version"] == "test-v1"
    assert answer["latency_ms"] > 0
    # One flat colour: nothing in focus, so the answer says to take the image again.
    assert answer["quality"]["retake"] is True and answer["quality"]["blurred"] is True
    store = create_store(s3_settings)
    uploads = list(store.list("uploads/predictions/"))
    assert len(uploads) == 1 and uploads[0].endswith(f"/{answer['id']}.jpg")
    assert store.exists(f"results/predictions/{answer['id']}.json")
    polled = requests.get(f"{system.gateway_url}/api/v1/predictions/{answer['id']}", timeout=10).json()
    assert polled["label"] == "malignant" and polled["status"] == "done"


def test_megabyte_files_in_one_request_are_answered_and_stored_byte_for_byte(
    system: RunningSystem, s3_settings: Settings
) -> None:
    """Bodies of several MiB cross the gateway's 1 MiB read buffer and gunicorn's read-ahead many times."""
    system.start_worker()
    system.start_gateway()
    bright, dark = grainy_jpeg(230, (2400, 1800), seed=1), grainy_jpeg(20, (2000, 1500), seed=2)
    assert len(bright) > 2 * 2**20 and len(dark) > 2**20
    files = [("file", ("bright.jpg", bright, "image/jpeg")), ("file", ("dark.jpg", dark, "image/jpeg"))]
    response = requests.post(f"{system.gateway_url}/api/v1/predictions", files=files, timeout=60)
    assert response.status_code == 200, response.text
    answers = response.json()["predictions"]
    assert [answer["label"] for answer in answers] == ["malignant", "benign"]
    store = create_store(s3_settings)
    uploads = list(store.list("uploads/predictions/"))
    for answer, sent in zip(answers, (bright, dark), strict=True):
        [key] = [key for key in uploads if key.endswith(f"/{answer['id']}.jpg")]
        assert store.get(key) == sent  # a Pillow JPEG carries no metadata: stripping keeps every byte


def test_two_hundred_concurrent_predictions_are_each_answered_exactly_once(
    system: RunningSystem, s3_settings: Settings
) -> None:
    system.start_worker()
    system.start_worker()
    system.start_gateway()
    images = [(index, solid_jpeg(230 if index % 2 else 20)) for index in range(200)]
    with ThreadPoolExecutor(max_workers=50) as pool:
        responses = list(pool.map(lambda item: (item[0], predict(system.gateway_url, item[1])), images))
    assert [response.status_code for _, response in responses] == [200] * 200
    ids = [response.json()["id"] for _, response in responses]
    assert len(set(ids)) == 200
    for index, response in responses:
        assert response.json()["label"] == ("malignant" if index % 2 else "benign")
    results = list(create_store(s3_settings).list("results/predictions/"))
    assert len(results) == 200


def test_a_worker_killed_mid_batch_loses_no_job(s3_settings: Settings, tmp_path: Path, output_dir: Path) -> None:
    slow_models = write_models_dir(tmp_path / "slow-models", {"slow-v1": brightness_model(slow=True)}, "slow-v1")
    log_dir = output_dir / "logs" / "worker-killed"
    log_dir.mkdir(parents=True, exist_ok=True)
    system = RunningSystem(system_env(s3_settings, slow_models, worker_max_batch=8, predict_timeout_s=120), log_dir)
    try:
        doomed = system.start_worker()
        system.start_gateway()
        store = create_store(s3_settings)
        responses: list[requests.Response] = []

        def client(index: int) -> None:
            responses.append(predict(system.gateway_url, solid_jpeg(230 if index % 2 else 20)))

        clients = [threading.Thread(target=client, args=(index,)) for index in range(60)]
        for thread in clients:
            thread.start()
        deadline = time.monotonic() + 60
        while not list(store.list("results/predictions/")) and time.monotonic() < deadline:
            time.sleep(0.02)
        done_before_kill = len(list(store.list("results/predictions/")))
        doomed.kill()
        assert 0 < done_before_kill < 60, "the kill must land in the middle of the work"
        system.start_worker()
        for thread in clients:
            thread.join(timeout=120)
        assert sorted(response.status_code for response in responses) == [200] * 60
        assert len({response.json()["id"] for response in responses}) == 60
        assert len(list(store.list("results/predictions/"))) == 60
    finally:
        system.stop()


def test_a_job_nobody_answers_in_time_gets_504_with_its_id_and_is_answered_later(
    s3_settings: Settings, models_dir: Path, output_dir: Path
) -> None:
    log_dir = output_dir / "logs" / "timeout"
    log_dir.mkdir(parents=True, exist_ok=True)
    system = RunningSystem(system_env(s3_settings, models_dir, predict_timeout_s=1), log_dir)
    try:
        system.start_gateway()
        response = predict(system.gateway_url, solid_jpeg(20))
        assert response.status_code == 504
        [job_id] = response.json()["error"]["ids"]
        status_url = f"{system.gateway_url}/api/v1/predictions/{job_id}"
        assert requests.get(status_url, timeout=10).json()["status"] == "pending"
        system.start_worker()
        deadline = time.monotonic() + 30
        while requests.get(status_url, timeout=10).json()["status"] == "pending" and time.monotonic() < deadline:
            time.sleep(0.1)
        assert requests.get(status_url, timeout=10).json()["label"] == "benign"
    finally:
        system.stop()


def test_a_worker_stops_cleanly_on_sigterm(system: RunningSystem) -> None:
    worker = system.start_worker()
    system.start_gateway()
    assert predict(system.gateway_url, solid_jpeg(20)).status_code == 200
    assert worker.stop() == 0


def test_a_prediction_naming_its_collection_is_judged_by_that_collections_threshold(
    s3_settings: Settings, tmp_path: Path, output_dir: Path
) -> None:
    models = write_models_dir(tmp_path / "models", {"clinics-v1": brightness_model()}, "clinics-v1")
    card_path = models / "versions" / "clinics-v1" / "card.json"
    card_path.write_text(
        json.dumps({**json.loads(card_path.read_text()), "collection_thresholds": {"clinic-north": 0.3}})
    )
    log_dir = output_dir / "logs" / "collection-threshold"
    log_dir.mkdir(parents=True, exist_ok=True)
    running = RunningSystem(system_env(s3_settings, models), log_dir)
    try:
        running.start_worker()
        running.start_gateway()
        image = solid_jpeg(115)  # the brightness model gives it about 0.36

        def ask(**form: str) -> requests.Response:
            files = {"file": ("lesion.jpg", image, "image/jpeg")}
            return requests.post(f"{running.gateway_url}/api/v1/predictions", data=form, files=files, timeout=60)

        own = ask(collection="clinic-north").json()
        assert (own["label"], own["threshold"], own["threshold_collection"]) == ("malignant", 0.3, "clinic-north")
        assert own["probability_malignant"] == pytest.approx(0.36, abs=0.03)
        for form in ({}, {"collection": "elsewhere"}):
            answer = ask(**form).json()
            assert (answer["label"], answer["threshold"], answer["threshold_collection"]) == ("benign", 0.5, None)
        polled = requests.get(f"{running.gateway_url}/api/v1/predictions/{own['id']}", timeout=10).json()
        assert polled["threshold_collection"] == "clinic-north"

        refused = ask(collection="Clinic North/../x")
        assert refused.status_code == 400 and "collection must be" in refused.json()["error"]["message"]
        assert len(list(create_store(s3_settings).list("uploads/predictions/"))) == 3, "the refused one stored nothing"
    finally:
        running.stop()
