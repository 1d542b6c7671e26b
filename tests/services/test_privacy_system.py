"""Privacy on the running system: gateway, worker and insights as processes, real RabbitMQ and S3.

A job deleted while queued stays deleted (the worker stores nothing for it); with retention 0 a
delivered answer leaves nothing; no log line or metric carries a client's file name.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from shared.settings import Settings
from shared.storage import create_store, layout
from tests.support.images import solid_jpeg
from tests.support.system import RunningSystem, system_env

TOKEN = "privacy-system-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
# A client's file name that must appear in no log and no metric.
DISTINCTIVE = "Jane-Doe-mole-left-shoulder-7f3a9c"
WAIT_S = 60


@pytest.fixture
def log_dir(output_dir: Path, request: pytest.FixtureRequest) -> Path:
    folder = output_dir / "logs" / request.node.name
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture
def system(s3_settings: Settings, models_dir: Path, log_dir: Path) -> Iterator[RunningSystem]:
    running = RunningSystem(system_env(s3_settings, models_dir, write_token=TOKEN), log_dir)
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture
def zero_retention_system(s3_settings: Settings, models_dir: Path, log_dir: Path) -> Iterator[RunningSystem]:
    env = system_env(s3_settings, models_dir, write_token=TOKEN, prediction_retention_days=0, log_level="DEBUG")
    running = RunningSystem(env, log_dir)
    try:
        yield running
    finally:
        running.stop()


def post(url: str, data: bytes, name: str = "lesion.jpg", query: str = "") -> requests.Response:
    return requests.post(f"{url}/api/v1/predictions{query}", files={"file": (name, data, "image/jpeg")}, timeout=60)


def poll_until_answered(url: str, job_id: str) -> requests.Response:
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        response = requests.get(f"{url}/api/v1/predictions/{job_id}", timeout=10)
        if response.status_code != 200 or response.json().get("status") != "pending":
            return response
        time.sleep(0.1)
    raise AssertionError(f"{job_id} still pending after {WAIT_S}s")


def test_a_job_deleted_while_queued_stays_deleted(system: RunningSystem, s3_settings: Settings) -> None:
    system.start_gateway()  # no worker yet: the jobs wait in the queue
    doomed = post(system.gateway_url, solid_jpeg(230), query="?wait=false").json()["id"]
    witness = post(system.gateway_url, solid_jpeg(20), query="?wait=false").json()["id"]
    assert (
        requests.delete(f"{system.gateway_url}/api/v1/predictions/{doomed}", headers=AUTH, timeout=10).status_code
        == 204
    )
    worker = system.start_worker()
    # One worker takes the queue in order: once the later job is answered, the deleted one was handled.
    assert poll_until_answered(system.gateway_url, witness).json()["label"] == "benign"
    store = create_store(s3_settings)
    assert not store.exists(layout.prediction_result(doomed))
    assert requests.get(f"{system.gateway_url}/api/v1/predictions/{doomed}", timeout=10).status_code == 410
    assert worker.process.poll() is None  # the worker lives on


def test_with_retention_zero_nothing_is_left_once_answers_are_delivered_and_no_log_names_a_file(
    zero_retention_system: RunningSystem, s3_settings: Settings
) -> None:
    system = zero_retention_system
    system.start_worker()
    system.start_service("insights", "services.insights", "insights_metrics_port")
    system.start_gateway()
    url = system.gateway_url
    name = f"{DISTINCTIVE}.jpg"
    answered = post(url, solid_jpeg(230), name)
    assert answered.status_code == 200, answered.text
    polled_id = post(url, solid_jpeg(20), name, query="?wait=false").json()["id"]
    assert poll_until_answered(url, polled_id).json()["label"] == "benign"
    for job_id in (answered.json()["id"], polled_id):
        assert requests.get(f"{url}/api/v1/predictions/{job_id}", timeout=10).status_code == 410
    store = create_store(s3_settings)
    assert list(store.list("uploads/predictions/")) == [] and list(store.list("results/predictions/")) == []
    # Refused files and labelled uploads carry the name too: the name is echoed to the client only.
    assert post(url, b"not an image", name).status_code == 422
    labelled = requests.post(
        f"{url}/api/v1/datasets/uploads",
        headers=AUTH,
        timeout=60,
        data={"label": "benign"},
        files=[("file", (name, solid_jpeg(90), "image/jpeg")), ("file", (f"bad-{name}", b"junk", "image/jpeg"))],
    )
    assert labelled.json()["added"] == 1 and labelled.json()["rejected"] == 1
    metrics = requests.get(f"{url}/metrics", timeout=10).text
    system.stop()
    logs = {service.name: service.log_path.read_text(errors="replace") for service in system.services}
    assert set(logs) == {"worker-1", "insights", "gateway"} and all(logs.values())
    # The logs (at DEBUG) did record the requests: by their ids.
    assert answered.json()["id"] in logs["gateway"] and "retention" in logs["insights"]
    for service, text in logs.items():
        assert DISTINCTIVE not in text, f"the {service} log names a client's file"
    assert DISTINCTIVE not in metrics
