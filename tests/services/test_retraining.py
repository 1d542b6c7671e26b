"""Whole retraining runs on real parts: gateway, worker and trainer processes (quick profile)."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import requests
from PIL import Image

from shared.dataset import iter_images
from shared.serving import registry
from shared.settings import REPO_ROOT, Settings
from shared.storage import create_store
from tests.support.images import encode, solid_jpeg
from tests.support.onnx_models import brightness_model, write_models_dir
from tests.support.system import RunningSystem, system_env

TOKEN = "retrain-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
RUN_TIMEOUT_S = 400


def lesion_like(seed: int, malignant: bool) -> bytes:
    """Noisy images whose brightness tells the class: learnable, and the test model knows it."""
    rng = np.random.default_rng(seed)
    base = 180 if malignant else 60
    pixels = np.clip(rng.normal(base, 25, (64, 64, 3)), 0, 255).astype(np.uint8)
    return encode(Image.fromarray(pixels), "PNG")


def write_dataset(root: Path, per_class: dict[str, int], seed: int = 0) -> Path:
    for split_index, (split, count) in enumerate(per_class.items()):
        for label in ("benign", "malignant"):
            folder = root / split / label
            folder.mkdir(parents=True, exist_ok=True)
            malignant = label == "malignant"
            for index in range(count):
                image_seed = seed + split_index * 10_000 + index * 2 + malignant
                (folder / f"{index}.png").write_bytes(lesion_like(image_seed, malignant))
    return root


def write_external(root: Path, per_class: int, seed: int = 50_000) -> Path:
    """Another collection: benign/ and malignant/ at its root, none of its images in `write_dataset`'s."""
    for label in ("benign", "malignant"):
        folder = root / label
        folder.mkdir(parents=True, exist_ok=True)
        malignant = label == "malignant"
        for index in range(per_class):
            (folder / f"ext{index}.png").write_bytes(lesion_like(seed + index * 2 + malignant, malignant))
    return root


def run_system(settings: Settings, models_dir: Path, output_dir: Path, name: str, **extra: object) -> RunningSystem:
    log_dir = output_dir / "logs" / name
    log_dir.mkdir(parents=True, exist_ok=True)
    # The test collections have 5-8 malignant held-out images: judge them all.
    env = system_env(settings, models_dir, write_token=TOKEN, training_profile="quick", gate_min_malignant=5, **extra)
    return RunningSystem(env, log_dir)


def import_dataset(system: RunningSystem, folder: Path, *args: str) -> str:
    completed = subprocess.run(
        [sys.executable, "-m", "services.trainer", "import-dataset", "--data", str(folder), *args],
        env={**system.env, "PYTHONPATH": str(REPO_ROOT)},
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return completed.stdout.strip().splitlines()[-1]


def wait_for_job(gateway_url: str, job_id: str, timeout_s: float = RUN_TIMEOUT_S) -> dict:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        job = requests.get(f"{gateway_url}/api/v1/training-jobs/{job_id}", timeout=10).json()
        if job["status"] in {"promoted", "rejected", "failed"}:
            return job
        time.sleep(0.5)
    raise AssertionError(f"training job {job_id} did not finish within {timeout_s}s: {job}")


def start_training(gateway_url: str, epochs: int = 1) -> str:
    response = requests.post(f"{gateway_url}/api/v1/training-jobs", json={"epochs": epochs}, headers=AUTH, timeout=10)
    # 200: a job was already queued, and this is it (one waiting run is enough).
    assert response.status_code in {200, 202}, response.text
    return response.json()["id"]


def predict_version(gateway_url: str) -> str:
    response = requests.post(
        f"{gateway_url}/api/v1/predictions", files={"file": ("x.jpg", solid_jpeg(200), "image/jpeg")}, timeout=30
    )
    assert response.status_code == 200, response.text
    return response.json()["model_version"]


def wait_for_version(gateway_url: str, version: str, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while predict_version(gateway_url) != version:
        assert time.monotonic() < deadline, f"workers did not switch to {version}"
        time.sleep(0.2)


@pytest.fixture
def weak_production(tmp_path: Path) -> Path:
    """Production that gets the classes backwards: any honest candidate beats it."""
    return write_models_dir(tmp_path / "weak", {"weak-v1": brightness_model(weight=-12.0, bias=6.0)}, "weak-v1")


@pytest.fixture
def dataset_dir(tmp_path: Path) -> Path:
    return write_dataset(tmp_path / "data", {"train": 16, "test": 8})


@pytest.fixture
def external_dir(tmp_path: Path) -> Path:
    return write_external(tmp_path / "external", 5)


@pytest.fixture
def trained_system(
    s3_settings: Settings,
    weak_production: Path,
    external_dir: Path,
    output_dir: Path,
    request: pytest.FixtureRequest,
) -> Iterator[RunningSystem]:
    # The trainer imports EXTERNAL_DATA_DIR as an external collection when it starts.
    system = run_system(s3_settings, weak_production, output_dir, request.node.name, external_data_dir=external_dir)
    try:
        system.start_worker()
        system.start_gateway()
        system.start_service("trainer", "services.trainer", "trainer_metrics_port", "serve")
        yield system
    finally:
        system.stop()


def test_through_the_api_a_clinic_adds_images_retrains_sees_the_gate_per_collection_and_rolls_back(
    trained_system: RunningSystem, dataset_dir: Path, external_dir: Path, s3_settings: Settings
) -> None:
    url = trained_system.gateway_url
    store = create_store(s3_settings)
    # The trainer imported EXTERNAL_DATA_DIR as an external collection named after its folder.
    assert {(image.collection, image.part) for image in iter_images(store)} == {("external", "test")}
    assert '"added": 48' in import_dataset(trained_system, dataset_dir)
    assert '"added": 0' in import_dataset(trained_system, dataset_dir), "a second import adds nothing"
    uploads = [
        requests.post(
            f"{url}/api/v1/datasets/uploads",
            data={"label": label, "collection": "clinic-a", "patient": f"P{patient}"},
            files=[
                (
                    "file",
                    (f"p{patient}-{i}.png", lesion_like(2000 + patient * 10 + i, label == "malignant"), "image/png"),
                )
                for i in range(2)
            ],
            headers=AUTH,
            timeout=30,
        ).json()
        for patient, label in enumerate(["benign", "malignant"] * 10)
    ]
    assert sum(upload["added"] for upload in uploads) == 40
    assert {upload["import"] for upload in uploads} == {"queued"}
    # The gateway staged them; the trainer's import loop puts them into the dataset.
    deadline = time.monotonic() + 60
    while len(list(iter_images(store, "clinic-a"))) < 40:
        assert time.monotonic() < deadline, "the trainer did not import the uploads"
        time.sleep(0.2)
    held_out = sum(upload["held_out"] for upload in uploads)
    assert {image.part for image in iter_images(store, "clinic-a")} == {"train", "test"}
    assert held_out == sum(1 for image in iter_images(store, "clinic-a") if image.part == "test")

    job = wait_for_job(url, start_training(url))
    assert job["status"] == "promoted", job
    gate = job["gate"]
    assert gate["passed"] is True and sorted(gate["collections"]) == ["clinic-a", "data", "external"]
    # The backwards production model fails every collection; the candidate is judged on each.
    assert gate["collections"]["external"]["production"]["auc"] == 0.0
    assert gate["collections"]["data"]["candidate"]["n"] == 16 and gate["collections"]["data"]["judged"]
    assert gate["collections"]["external"]["external"] is True
    assert gate["production"]["auc"] == 0.0 and gate["candidate"]["n"] == 16 + held_out
    reasons = [reason.split(":", 1)[0] for reason in gate["reasons"]]
    assert reasons == ["clinic-a", "data", "external"] + ["held-out parts pooled"] * 2
    assert job["progress"]["stage"] in ("evaluating", "publishing") or job["progress"]["epochs"] >= 2
    assert job["progress"]["elapsed_seconds"] > 0
    version = job["candidate_version"]
    models = requests.get(f"{url}/api/v1/models", timeout=10).json()
    assert models["production"] == version
    card = requests.get(f"{url}/api/v1/models/{version}", timeout=10).json()
    assert card["parent_version"] == "weak-v1" and card["gate"]["passed"]
    # The training parts only: held-out parts and the external collection are never trained on.
    assert card["data"]["train"]["n"] + card["data"]["validation"]["n"] == 32 + 40 - held_out
    assert card["data"]["collections"]["external"]["train"] is None
    assert card["metrics"]["collections"]["external"]["n"] == 10
    assert card["data"]["external"]["name"] == "external", "named after the folder it was imported from"
    assert (
        card["gate"]["collections"]["external"]["candidate"]["auc"] == card["metrics"]["collections"]["external"]["auc"]
    )

    wait_for_version(url, version)
    rollback = requests.post(f"{url}/api/v1/models/weak-v1/promote", headers=AUTH, timeout=10)
    assert rollback.status_code == 200
    wait_for_version(url, "weak-v1")


def test_a_worse_candidate_is_stored_but_not_promoted(
    s3_settings: Settings, models_dir: Path, tmp_path: Path, output_dir: Path
) -> None:
    # Production is the brightness model (perfect on this data); the candidate learns from
    # shuffled labels.
    shuffled = write_dataset(tmp_path / "data", {"train": 16, "test": 8})
    for index, path in enumerate(sorted((shuffled / "train" / "benign").iterdir())):
        if index % 2:
            path.rename(shuffled / "train" / "malignant" / f"moved-{path.name}")
    system = run_system(s3_settings, models_dir, output_dir, "worse-candidate")
    try:
        system.start_gateway()
        system.start_service("trainer", "services.trainer", "trainer_metrics_port", "serve")
        import_dataset(system, shuffled)
        # Three requests in a row: one sent while another waits on the queue is answered with
        # the waiting job, so at most two jobs (one running, one queued) come of them.
        job_ids = list(dict.fromkeys(start_training(system.gateway_url) for _ in range(3)))
        assert len(job_ids) <= 2
        jobs = [wait_for_job(system.gateway_url, job_id) for job_id in job_ids]
        assert [job["status"] for job in jobs] == ["rejected"] * len(jobs), jobs
        assert all(job["gate"]["passed"] is False and job["gate"]["reasons"] for job in jobs)
        runs = {job["candidate_version"] for job in jobs}
        assert len(runs) <= len(jobs), "no job makes more than one run"
        store = create_store(s3_settings)
        assert registry.production_version(store) == "test-v1"
        assert sorted(registry.list_versions(store)) == sorted({"test-v1", *runs})
    finally:
        system.stop()


def test_a_trainer_killed_mid_run_finishes_the_job_after_restart_with_one_version(
    s3_settings: Settings, weak_production: Path, dataset_dir: Path, output_dir: Path
) -> None:
    # The trainer imports DATA_DIR when it starts, as under `make run` and compose.
    system = run_system(s3_settings, weak_production, output_dir, "trainer-killed", data_dir=dataset_dir)
    try:
        system.start_gateway()
        trainer = system.start_service("trainer", "services.trainer", "trainer_metrics_port", "serve")
        assert len(list(iter_images(create_store(s3_settings)))) == 48
        job_id = start_training(system.gateway_url, epochs=3)
        deadline = time.monotonic() + RUN_TIMEOUT_S
        while (
            requests.get(f"{system.gateway_url}/api/v1/training-jobs/{job_id}", timeout=10).json()["status"]
            != "running"
        ):
            assert time.monotonic() < deadline
            time.sleep(0.1)
        time.sleep(3)
        trainer.kill()
        store = create_store(s3_settings)
        assert registry.list_versions(store) == ["weak-v1"], "no half-written version is visible"
        system.start_service("trainer-2", "services.trainer", "trainer_metrics_port", "serve")
        job = wait_for_job(system.gateway_url, job_id)
        assert job["status"] == "promoted"
        assert job["attempts"] == 2
        assert registry.list_versions(store) == sorted(["weak-v1", job_id])
    finally:
        system.stop()


def test_promotion_under_load_fails_no_request_and_switches_versions(
    s3_settings: Settings, models_dir: Path, output_dir: Path
) -> None:
    system = run_system(s3_settings, models_dir, output_dir, "promotion-under-load")
    try:
        system.start_worker()
        system.start_worker()
        system.start_gateway()
        store = create_store(s3_settings)
        card = registry.read_card(store, "test-v1").document
        registry.publish_version(store, "test-v2", {"model.onnx": brightness_model(weight=10.0, bias=-5.0)}, card)
        answers: list[tuple[int, str]] = []
        stop = threading.Event()

        def client() -> None:
            while not stop.is_set():
                response = requests.post(
                    f"{system.gateway_url}/api/v1/predictions",
                    files={"file": ("x.jpg", solid_jpeg(200), "image/jpeg")},
                    timeout=30,
                )
                answers.append((response.status_code, response.json().get("model_version", "")))

        clients = [threading.Thread(target=client) for _ in range(8)]
        for thread in clients:
            thread.start()
        time.sleep(2)
        promoted = requests.post(f"{system.gateway_url}/api/v1/models/test-v2/promote", headers=AUTH, timeout=10)
        assert promoted.status_code == 200
        deadline = time.monotonic() + 30
        while not (answers and answers[-1][1] == "test-v2") and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(2)
        stop.set()
        for thread in clients:
            thread.join(timeout=60)
        assert {status for status, _ in answers} == {200}
        versions = [version for _, version in answers]
        assert versions[0] == "test-v1" and versions[-1] == "test-v2"
        assert len(answers) > 50
    finally:
        system.stop()
