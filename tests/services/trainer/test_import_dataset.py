"""`import-dataset --split external` and EXTERNAL_DATA_DIR: another collection into its own split.

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
from services.trainer.commands import startup_folders
from shared.dataset import iter_images
from shared.settings import REPO_ROOT, Settings
from shared.storage import create_store
from tests.services.test_retraining import write_dataset, write_external
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


def test_an_external_folder_goes_to_its_own_split_once_and_shows_as_a_split_in_insights(
    s3_settings: Settings, tmp_path: Path
) -> None:
    store = create_store(s3_settings)
    data = write_dataset(tmp_path / "data", {"train": 3, "test": 2})
    external = write_external(tmp_path / "external", 4)
    # A copy of a training image: never scored as if it were unseen.
    (external / "benign" / "copy-of-train.png").write_bytes((data / "train" / "benign" / "0.png").read_bytes())
    assert result_line(import_dataset(s3_settings, data))["added"] == 10

    first = result_line(import_dataset(s3_settings, external, "--split", "external"))
    assert (first["split"], first["added"], first["duplicate"], first["rejected"]) == ("external", 8, 1, 0)
    images = list(iter_images(store, "external"))
    assert all(image.key.startswith(f"datasets/external/{image.label}/") for image in images)
    assert sorted(image.label for image in images) == ["benign"] * 4 + ["malignant"] * 4
    second = result_line(import_dataset(s3_settings, external, "--split", "external"))
    assert (second["added"], second["duplicate"]) == (0, 9), "a second import adds nothing"
    assert len(list(iter_images(store))) == 18

    snapshot = SnapshotBuilder(
        store, max_bytes=s3_settings.max_upload_bytes, max_pixels=s3_settings.max_image_pixels
    ).refresh()
    assert snapshot["counts"]["external"] == {"benign": 4, "malignant": 4}
    assert snapshot["counts"]["train"] == {"benign": 3, "malignant": 3}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--split", "elsewhere"), "invalid choice: 'elsewhere'"),
        # A {train,test}/ layout is not a {benign,malignant}/ one: nothing is imported by mistake.
        (("--split", "external"), "takes a folder with benign/ and malignant/ at its root"),
    ],
)
def test_a_wrong_split_or_folder_layout_is_refused_with_exit_code_2(
    s3_settings: Settings, tmp_path: Path, args: tuple[str, ...], message: str
) -> None:
    completed = import_dataset(s3_settings, write_dataset(tmp_path / "data", {"train": 1}), *args)
    assert completed.returncode == 2
    assert message in completed.stderr
    assert not list(iter_images(create_store(s3_settings)))


def test_the_trainer_imports_external_data_dir_into_external_only_when_it_is_a_folder(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    data = write_dataset(tmp_path / "data", {"train": 1})
    external = write_external(tmp_path / "external", 1)
    environ = {"DATA_DIR": str(data), "EXTERNAL_DATA_DIR": str(external)}
    assert startup_folders(Settings.from_env(environ)) == [(data, None), (external, "external")]
    assert startup_folders(Settings.from_env({**environ, "EXTERNAL_DATA_DIR": ""})) == [(data, None)]
    with caplog.at_level(logging.WARNING):
        missing = Settings.from_env({**environ, "EXTERNAL_DATA_DIR": str(tmp_path / "missing")})
        assert startup_folders(missing) == [(data, None)]
    assert "is not a folder" in caplog.text
