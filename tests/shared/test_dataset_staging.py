"""Staged dataset uploads (shared/dataset_staging.py): the gateway stages, the trainer imports.

Filesystem store; the import is called directly, as the trainer's consumer calls it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from shared import dataset, dataset_staging
from shared.errors import StorageUnavailable
from shared.storage import ObjectStore, get_json, layout, put_json
from shared.storage.filesystem import FilesystemStore
from tests.support.images import noise_png

LIMITS = {"max_bytes": 10_000_000, "max_pixels": 50_000_000}


@pytest.fixture
def store(tmp_path: Path) -> FilesystemStore:
    return FilesystemStore(tmp_path / "store")


def stage(store: ObjectStore, seeds: list[int], *, collection: str = "clinic-a", patient: str | None = "P1") -> str:
    batch_id = dataset_staging.new_batch_id()
    record, new = dataset_staging.collection_for_upload(store, collection, 0.2)
    dataset_staging.stage_upload(
        store,
        batch_id,
        record,
        new_collection=new,
        label="malignant",
        patient=patient,
        files=[(f"{seed}.png", noise_png(seed)) for seed in seeds],
        known=dataset.known_hashes(store),
        **LIMITS,
    )
    return batch_id


def dataset_objects(store: ObjectStore) -> dict[str, bytes]:
    return {key: store.get(key) for key in store.list(layout.DATASETS_PREFIX)}


class CrashingStore:
    """The real store, until `crash_after` more writes (and deletes, unless `deletes_work`) have
    happened: then every one fails."""

    def __init__(self, store: ObjectStore, crash_after: int, *, deletes_work: bool = False) -> None:
        self._store, self._left, self._deletes_work = store, crash_after, deletes_work

    def _step(self, key: str) -> None:
        if self._left <= 0:
            raise StorageUnavailable(f"crashed before {key}")
        self._left -= 1

    def put(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> None:
        self._step(key)
        self._store.put(key, data, content_type)

    def delete(self, key: str) -> None:
        if not self._deletes_work:
            self._step(key)
        self._store.delete(key)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)


def test_staging_writes_nothing_under_datasets_and_the_manifest_last(store: FilesystemStore) -> None:
    batch_id = stage(store, [1, 2, 3])
    assert list(store.list(layout.DATASETS_PREFIX)) == []
    manifest = get_json(store, layout.dataset_staging_manifest(batch_id))
    assert manifest["collection"] == "clinic-a" and manifest["new_collection"] is True
    assert manifest["holdout_fraction"] == 0.2 and manifest["label"] == "malignant"
    assert len(manifest["images"]) == 3 and set(manifest["patients"].values()) == {"P1"}
    assert all(image["filename"] == f"{image['sha256']}.png" for image in manifest["images"]), "no client names"
    assert dataset_staging.staged_batches(store) == [batch_id]
    # Retention never expires a staged batch: it is none of a prediction's prefixes.
    assert not any(layout.DATASET_STAGING_PREFIX.startswith(prefix) for prefix in layout.PREDICTION_PREFIXES)


def test_an_import_stores_what_staging_promised_and_a_second_delivery_changes_nothing(store: FilesystemStore) -> None:
    batch_id = stage(store, [1, 2, 3])
    promised = get_json(store, layout.dataset_staging_manifest(batch_id))["images"]
    report = dataset_staging.import_batch(store, batch_id)
    assert report is not None and (report.added, report.collection) == (3, "clinic-a")
    stored = {(image.part, image.sha256) for image in dataset.iter_images(store, "clinic-a")}
    assert stored == {(image["part"], image["sha256"]) for image in promised}
    assert dataset.read_collection(store, "clinic-a").holdout_fraction == 0.2
    assert set(dataset.read_patients(store, "clinic-a").values()) == {"P1"}
    assert list(store.list(layout.DATASET_STAGING_PREFIX)) == []
    imported = dataset_objects(store)
    assert dataset_staging.import_batch(store, batch_id) is None, "the job delivered again: already imported"
    assert dataset_objects(store) == imported


@pytest.mark.parametrize("crash_after", range(9))
def test_an_import_crashed_at_any_write_ends_like_one_that_was_not(store: FilesystemStore, crash_after: int) -> None:
    """3 images: collection record, patients, 3 images, manifest and 3 staged images deleted = 9 writes."""
    batch_id = stage(store, [1, 2, 3])
    events: list[dataset_staging.ImportReport] = []
    with pytest.raises(StorageUnavailable):
        dataset_staging.import_batch(CrashingStore(store, crash_after), batch_id, before_discard=events.append)  # type: ignore[arg-type]
    # Redelivered: the same job again, on a store that works.
    again = dataset_staging.import_batch(store, batch_id, before_discard=events.append)
    assert len(list(dataset.iter_images(store, "clinic-a"))) == 3
    assert set(dataset.read_patients(store, "clinic-a").values()) == {"P1"}
    assert list(store.list(layout.DATASET_STAGING_PREFIX)) == []
    # The change is announced at least once: before the staged batch is deleted.
    assert events and (again is None or again.added + again.already_imported == 3)


def test_an_existing_collection_keeps_its_share_and_duplicates_are_not_staged(store: FilesystemStore) -> None:
    put_json(
        store, layout.collection_record("clinic-a"), {"name": "clinic-a", "external": False, "holdout_fraction": 0.5}
    )
    first = stage(store, [1, 2])
    manifest = get_json(store, layout.dataset_staging_manifest(first))
    assert (manifest["new_collection"], manifest["holdout_fraction"]) == (False, 0.5)
    dataset_staging.import_batch(store, first)
    record, _ = dataset_staging.collection_for_upload(store, "clinic-a", 0.2)
    outcomes = dataset_staging.stage_upload(
        store,
        dataset_staging.new_batch_id(),
        record,
        new_collection=False,
        label="benign",
        patient=None,
        files=[("again.png", noise_png(1)), ("new.png", noise_png(9)), ("new-again.png", noise_png(9))],
        known=dataset.known_hashes(store),
        **LIMITS,
    )
    assert [outcome.status for outcome in outcomes] == ["duplicate", "added", "duplicate"]


def test_an_image_stored_elsewhere_after_staging_is_not_stored_twice(store: FilesystemStore) -> None:
    """Two uploads of one image staged before either is imported: the first import keeps it."""
    one, two = stage(store, [1], collection="clinic-a"), stage(store, [1, 2], collection="clinic-b")
    dataset_staging.import_batch(store, one)
    report = dataset_staging.import_batch(store, two)
    assert report is not None and (report.added, report.duplicates) == (1, 1)
    assert sorted(image.collection for image in dataset.iter_images(store)) == ["clinic-a", "clinic-b"]


@pytest.mark.parametrize("crash_after", [0, 2, 3])
def test_a_failed_staging_leaves_nothing_behind(store: FilesystemStore, crash_after: int) -> None:
    """The store fails at an image's write, or at the manifest's (the fourth write)."""
    with pytest.raises(StorageUnavailable):
        stage(CrashingStore(store, crash_after, deletes_work=True), [1, 2, 3])  # type: ignore[arg-type]
    assert list(store.list("uploads/")) == [] and list(store.list(layout.DATASETS_PREFIX)) == []


@pytest.mark.parametrize("batch_id", ["../../datasets/x", "", "20260101T000000Z-abc"])
def test_a_job_naming_no_batch_is_refused_for_good(store: FilesystemStore, batch_id: str) -> None:
    with pytest.raises(dataset_staging.BadBatch):
        dataset_staging.import_batch(store, batch_id)


def test_a_malformed_manifest_is_refused_for_good(store: FilesystemStore) -> None:
    batch_id = stage(store, [1])
    manifest = get_json(store, layout.dataset_staging_manifest(batch_id))
    manifest["images"][0]["filename"] = "../../models/aliases/production.json"
    put_json(store, layout.dataset_staging_manifest(batch_id), manifest)
    with pytest.raises(dataset_staging.BadBatch):
        dataset_staging.import_batch(store, batch_id)
    assert list(store.list(layout.DATASETS_PREFIX)) == []
