"""The trainer service across a lost store, on a real S3 server (SeaweedFS) this test kills.

Real parts throughout: gateway and trainer processes, the real RabbitMQ, the quick training
profile. What must hold: the trainer process never exits, and a job never stays "running".
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from shared import training_jobs
from shared.dataset import iter_images
from shared.errors import NotFound, StorageUnavailable
from shared.settings import Settings
from shared.storage import ObjectStore, create_store
from tests.conftest import AMQP_URL
from tests.faults import conftest as fault_servers
from tests.services.test_retraining import run_system, start_training, wait_for_job, write_dataset
from tests.support.network import waiting
from tests.support.onnx_models import brightness_model, write_models_dir
from tests.support.seaweedfs import SeaweedS3
from tests.support.system import RunningSystem, ServiceProcess

STORE_DOWN_S = 5  # how long the store stays away once the run has ended without it
WAIT_S = 300

# The fault tests' own S3 server (SeaweedFS), which a test may kill and start again.
own_s3 = fault_servers.own_s3


@pytest.fixture
def settings(own_s3: SeaweedS3, namespace: str, tmp_path: Path) -> Settings:
    weak = write_models_dir(tmp_path / "weak", {"weak-v1": brightness_model(weight=-12.0, bias=6.0)}, "weak-v1")
    return own_s3.settings(broker_namespace=namespace, amqp_url=AMQP_URL, models_dir=weak)


@pytest.fixture
def system(
    settings: Settings, tmp_path: Path, output_dir: Path, request: pytest.FixtureRequest
) -> Iterator[RunningSystem]:
    dataset = write_dataset(tmp_path / "data", {"train": 16, "test": 8})
    running = run_system(settings, settings.models_dir, output_dir, request.node.name, data_dir=dataset)
    try:
        yield running
    finally:
        running.stop()


wait_until = waiting(WAIT_S, interval_s=0.2)


def job_record(store: ObjectStore, job_id: str) -> dict[str, Any] | None:
    """The job's record, or None while the store is away."""
    try:
        return training_jobs.load(store, job_id)
    except (StorageUnavailable, NotFound):
        return None


def probe(service: ServiceProcess, path: str) -> requests.Response:
    return requests.get(f"http://127.0.0.1:{service.port}{path}", timeout=10)


def test_a_run_that_loses_the_store_ends_failed_with_the_reason_once_the_store_is_back(
    system: RunningSystem, settings: Settings, own_s3: SeaweedS3
) -> None:
    system.start_gateway()
    trainer = system.start_service("trainer", "services.trainer", "trainer_metrics_port", "serve")
    store = create_store(settings)
    job_id = start_training(system.gateway_url, epochs=3)

    # Lose the store once the run is training: its data is in memory, its record says running.
    def training() -> bool:
        record = job_record(store, job_id)
        return record is not None and (record.get("progress") or {}).get("stage") == "training"

    wait_until(training, "the run reached training")
    own_s3.kill()
    # The run ends without the store (its evaluation needs production's model) and the trainer
    # retries the final record: it says so in its log.
    wait_until(lambda: f"cannot update job {job_id}" in trainer.log_path.read_text(), "the final write retried")
    time.sleep(STORE_DOWN_S)
    assert trainer.process.poll() is None, "the trainer process exited while the store was away"
    assert probe(trainer, "/healthz").status_code == 200, "a store outage is not a dead trainer"
    not_ready = probe(trainer, "/readyz")
    assert not_ready.status_code == 503 and not_ready.json()["checks"]["storage"] != "ok", not_ready.text

    own_s3.start()
    back = time.monotonic()
    wait_until(lambda: (job_record(store, job_id) or {}).get("status") in training_jobs.FINISHED, "a final status")
    print(f"final status {time.monotonic() - back:.1f}s after the store came back")
    job = training_jobs.load(store, job_id)
    assert job["status"] == "failed", job
    assert job["error"].startswith("StorageUnavailable"), job["error"]
    assert job["timings"]["finished_at"] is not None
    wait_until(lambda: probe(trainer, "/readyz").status_code == 200, "the trainer ready again", timeout_s=60)

    # The same process serves the next request as if nothing had happened.
    second = wait_for_job(system.gateway_url, start_training(system.gateway_url, epochs=1), WAIT_S)
    assert second["status"] == "promoted", second
    assert trainer.process.poll() is None


def test_a_trainer_started_without_the_store_waits_for_it_instead_of_exiting(
    system: RunningSystem, settings: Settings, own_s3: SeaweedS3
) -> None:
    own_s3.kill()
    # The store comes back while the trainer waits; start_service fails if the process exits.
    returns = threading.Timer(8, own_s3.start)
    returns.start()
    try:
        trainer = system.start_service("trainer", "services.trainer", "trainer_metrics_port", "serve")
    finally:
        returns.join(timeout=90)
    log = trainer.log_path.read_text()
    assert "cannot seed the model registry" in log, "the trainer did not meet the store away"
    ready = {"broker": "ok", "storage": "ok", "training": "idle", "dataset_imports": "ok"}
    # The import loop starts once the store is prepared: it connects a moment after the rest.
    wait_until(lambda: probe(trainer, "/readyz").json()["checks"] == ready, "the trainer ready, imports too", 30)
    alive = {"trainer-loop": "alive", "dataset-import": "alive"}
    assert probe(trainer, "/healthz").json() == {"status": "ok", "checks": alive}
    wait_until(lambda: len(list(iter_images(create_store(settings)))) == 48, "the dataset imported", 60)
