"""`import-dataset` and DATA_DIR / EXTERNAL_DATA_DIR: folders into named collections.

Real parts: the command as a process, the suite's S3 server (SeaweedFS) and RabbitMQ (the
import announces `dataset.changed`).
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path

import pytest

from services.insights.snapshots import SnapshotBuilder
from services.trainer.service_commands import startup_folders
from shared import dataset
from shared.dataset import iter_images
from shared.settings import REPO_ROOT, Settings
from shared.storage import create_store, layout
from tests.services.test_retraining import lesion_like, write_dataset, write_external
from tests.support.system import system_env


def import_dataset(settings: Settings, folder: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "services.trainer", "import-dataset", "--data", str(folder), *args],
        env={**system_env(settings), "PYTHONPATH": str(REPO_ROOT)},
        capture_output=True,
        text=True,
        timeout=120,
    )


def result_line(completed: subprocess.CompletedProcess[str]) -> dict:
    assert completed.returncode == 0, completed.stderr
    return json.loads(completed.stdout.strip().splitlines()[-1])


def write_clinic(root: Path, patients: int, per_patient: int) -> Path:
    """A flat {benign,malignant}/ folder whose manifest.csv names each image's patient."""
    rows = ["path,label,patient"]
    for patient in range(patients):
        label = "malignant" if patient % 3 == 0 else "benign"
        (root / label).mkdir(parents=True, exist_ok=True)
        for index in range(per_patient):
            name = f"{label}/p{patient}-{index}.png"
            (root / name).write_bytes(lesion_like(70_000 + patient * 100 + index, label == "malignant"))
            rows.append(f"{name},{label},P{patient}")
    (root / "manifest.csv").write_text("\n".join(rows) + "\n")
    return root


def test_folders_become_collections_once_and_insights_counts_each_one(s3_settings: Settings, tmp_path: Path) -> None:
    store = create_store(s3_settings)
    data = write_dataset(tmp_path / "ham", {"train": 3, "test": 2})
    external = write_external(tmp_path / "derm", 4)
    # A copy of a training image: never scored as if it were unseen.
    (external / "benign" / "copy-of-train.png").write_bytes((data / "train" / "benign" / "0.png").read_bytes())
    first_data = result_line(import_dataset(s3_settings, data))
    assert (first_data["collection"], first_data["added"]) == ("ham", 10)

    first = result_line(import_dataset(s3_settings, external, "--external"))
    assert (first["collection"], first["added"], first["duplicate"], first["rejected"]) == ("derm", 8, 1, 0)
    images = list(iter_images(store, "derm"))
    assert {image.part for image in images} == {"test"}, "an external collection is held out whole"
    assert sorted(image.label for image in images) == ["benign"] * 4 + ["malignant"] * 4
    assert dataset.read_collection(store, "derm").external is True
    assert {(image.part, image.label) for image in iter_images(store, "ham")} == {
        (part, label) for part in ("train", "test") for label in ("benign", "malignant")
    }, "a folder with train/ and test/ keeps its own parts"
    second = result_line(import_dataset(s3_settings, external, "--external"))
    assert (second["added"], second["duplicate"]) == (0, 9), "a second import adds nothing"
    assert len(list(iter_images(store))) == 18

    snapshot = SnapshotBuilder(
        store, max_bytes=s3_settings.max_upload_bytes, max_pixels=s3_settings.max_image_pixels
    ).refresh()
    assert snapshot["collections"]["derm"]["external"] is True
    assert snapshot["collections"]["derm"]["counts"]["test"] == {"benign": 4, "malignant": 4}
    assert snapshot["collections"]["ham"]["counts"]["train"] == {"benign": 3, "malignant": 3}


def test_a_flat_folder_is_held_out_by_patient_and_keeps_its_patients(s3_settings: Settings, tmp_path: Path) -> None:
    store = create_store(s3_settings)
    clinic = write_clinic(tmp_path / "clinic", patients=30, per_patient=2)
    result = result_line(import_dataset(s3_settings, clinic, "--collection", "clinic-a"))
    assert (result["collection"], result["added"]) == ("clinic-a", 60)

    patients = dataset.read_patients(store, "clinic-a")
    assert len(patients) == 60 and set(patients.values()) == {f"P{i}" for i in range(30)}
    parts_of_patient: dict[str, set[str]] = {}
    for image in iter_images(store, "clinic-a"):
        parts_of_patient.setdefault(patients[image.sha256], set()).add(image.part)
    assert all(len(parts) == 1 for parts in parts_of_patient.values()), "no patient straddles the parts"
    held_out = sorted(patient for patient, parts in parts_of_patient.items() if parts == {"test"})
    record = dataset.read_collection(store, "clinic-a")
    assert held_out == sorted(p for p in parts_of_patient if dataset.assign_part(record, "", p) == "test")
    assert 1 <= len(held_out) <= 15, "about 20% of 30 patients"


@pytest.mark.parametrize(
    ("args", "manifest", "message"),
    [
        (("--collection", "Clinic A"), None, "collection must be 1-40 characters"),
        (("--collection", "../etc"), None, "collection must be 1-40 characters"),
        ((), "file,label\nbenign/0.png,benign\n", "manifest.csv has no 'path' column"),
        ((), "path,label,patient\nbenign/0.png,benign,../x\n", "patient must be"),
    ],
)
def test_a_bad_collection_name_or_manifest_is_refused_with_exit_code_2_and_stores_nothing(
    s3_settings: Settings, tmp_path: Path, args: tuple[str, ...], manifest: str | None, message: str
) -> None:
    folder = write_external(tmp_path / "clinic", 1)
    if manifest is not None:
        (folder / "manifest.csv").write_text(manifest)
    completed = import_dataset(s3_settings, folder, *args)
    assert completed.returncode == 2
    assert message in completed.stderr
    assert not list(create_store(s3_settings).list(layout.DATASETS_PREFIX))


def test_an_external_import_into_a_trained_on_collection_is_refused(s3_settings: Settings, tmp_path: Path) -> None:
    result_line(import_dataset(s3_settings, write_external(tmp_path / "clinic", 1)))
    completed = import_dataset(
        s3_settings, write_external(tmp_path / "more", 2, seed=90_000), "--collection", "clinic", "--external"
    )
    assert completed.returncode == 2 and "is trained on" in completed.stderr
    assert len(list(iter_images(create_store(s3_settings)))) == 2


def test_a_store_of_the_layout_before_collections_is_moved_into_collections(s3_settings: Settings) -> None:
    store = create_store(s3_settings)
    legacy = {
        "datasets/train/benign/aa.png": lesion_like(1, False),
        "datasets/test/malignant/bb.png": lesion_like(2, True),
        "datasets/incoming/malignant/cc.png": lesion_like(3, True),
        "datasets/external/benign/dd.png": lesion_like(4, False),
    }
    for key, data in legacy.items():
        store.put(key, data, "image/png")

    moved = dataset.migrate_legacy_layout(
        store, data_collection="ham10000", external_collection="derm7pt", holdout_fraction=0.2
    )

    assert (
        moved == 4
        and dataset.migrate_legacy_layout(
            store, data_collection="ham10000", external_collection="derm7pt", holdout_fraction=0.2
        )
        == 0
    )
    where = {(image.sha256, image.collection, image.part) for image in iter_images(store)}
    uploads_part = dataset.assign_part(dataset.read_collection(store, "uploads"), "cc", None)
    assert where == {
        ("aa", "ham10000", "train"),
        ("bb", "ham10000", "test"),
        ("cc", "uploads", uploads_part),
        ("dd", "derm7pt", "test"),
    }
    assert store.get("datasets/derm7pt/test/benign/dd.png") == legacy["datasets/external/benign/dd.png"]
    assert dataset.read_collection(store, "derm7pt").external is True


def test_the_trainer_imports_data_dir_and_external_data_dir_as_collections_named_after_them(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    data = write_dataset(tmp_path / "HAM10000", {"train": 1})
    external = write_external(tmp_path / "derm7pt", 1)
    environ = {"DATA_DIR": str(data), "EXTERNAL_DATA_DIR": str(external)}
    assert startup_folders(Settings.from_env(environ)) == [(data, "ham10000", False), (external, "derm7pt", True)]
    named = Settings.from_env({**environ, "DATA_COLLECTION": "home", "EXTERNAL_DATA_COLLECTION": "elsewhere"})
    assert startup_folders(named) == [(data, "home", False), (external, "elsewhere", True)]
    assert startup_folders(Settings.from_env({**environ, "EXTERNAL_DATA_DIR": ""})) == [(data, "ham10000", False)]
    with caplog.at_level(logging.WARNING):
        missing = Settings.from_env({**environ, "EXTERNAL_DATA_DIR": str(tmp_path / "missing")})
        assert startup_folders(missing) == [(data, "ham10000", False)]
    assert "is not a folder" in caplog.text
