"""A prediction's records keep their one rule: deleted stays deleted, whatever races it."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from shared import prediction_records
from shared.errors import Gone
from shared.messaging.schemas import PredictionResult
from shared.storage import FilesystemStore, ObjectStore, layout

JOB = "20261206-0000000000000000000000000000abcd"
DAY = datetime(2026, 12, 6, tzinfo=UTC)


@pytest.fixture
def store(tmp_path: Path) -> FilesystemStore:
    return FilesystemStore(tmp_path)


def answer(error: dict[str, str] | None = None) -> PredictionResult:
    if error:
        return PredictionResult(job_id=JOB, error=error)
    return PredictionResult(job_id=JOB, label="benign", probability_malignant=0.1, model_version="v1")


class DeletedDuringWrites:
    """A store on which the prediction is deleted right after its first write lands (the race)."""

    def __init__(self, store: ObjectStore) -> None:
        self._store = store
        self.raced = False

    def put(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> None:
        self._store.put(key, data, content_type)
        if not self.raced and key != layout.prediction_tombstone(JOB):
            self.raced = True
            prediction_records.forget(self._store, JOB, DAY, "deleted on request")

    def __getattr__(self, name: str) -> object:
        return getattr(self._store, name)


def test_a_result_is_stored_and_read_back(store: FilesystemStore) -> None:
    assert prediction_records.read_result(store, JOB) is None
    assert prediction_records.store_result(store, answer()) is True
    assert prediction_records.read_result(store, JOB) == answer()


def test_a_result_written_while_the_prediction_is_deleted_is_taken_back(store: FilesystemStore) -> None:
    racing = DeletedDuringWrites(store)
    assert prediction_records.store_result(racing, answer()) is False  # type: ignore[arg-type]
    assert racing.raced and prediction_records.read_result(store, JOB) is None
    assert prediction_records.deletion_reason(store, JOB) == "deleted on request"


def test_a_failure_of_a_deleted_prediction_is_never_written(store: FilesystemStore) -> None:
    prediction_records.forget(store, JOB, DAY, "deleted on request")
    assert prediction_records.store_result(store, answer({"code": "not_found", "message": "gone"})) is False
    assert not prediction_records.has_result(store, JOB)


def test_a_dead_letter_failure_never_replaces_an_answer_nor_revives_a_deleted_prediction(
    store: FilesystemStore,
) -> None:
    failure = answer({"code": "dead_lettered", "message": "delivery limit"})
    assert prediction_records.record_failure(store, failure) is True
    prediction_records.remove_result(store, JOB)
    prediction_records.store_result(store, answer())
    assert prediction_records.record_failure(store, failure) is False
    assert prediction_records.read_result(store, JOB) == answer()
    prediction_records.forget(store, JOB, DAY, "deleted on request")
    assert prediction_records.record_failure(store, failure) is False
    assert not prediction_records.has_result(store, JOB)


def test_a_heat_map_of_a_prediction_deleted_before_or_while_it_is_drawn_is_not_kept(store: FilesystemStore) -> None:
    racing = DeletedDuringWrites(store)
    with pytest.raises(Gone):
        prediction_records.store_heatmap(racing, JOB, b"png")  # type: ignore[arg-type]
    assert not prediction_records.has_heatmap(store, JOB)
    with pytest.raises(Gone):
        prediction_records.store_heatmap(store, JOB, b"png")
    assert not prediction_records.has_heatmap(store, JOB)


def test_forgetting_removes_every_record_leaves_a_tombstone_and_may_be_repeated(store: FilesystemStore) -> None:
    store.put(layout.prediction_upload(JOB, "jpg", DAY), b"image")
    prediction_records.store_result(store, answer())
    prediction_records.store_heatmap(store, JOB, b"png")
    assert prediction_records.upload_key(store, JOB, DAY) == layout.prediction_upload(JOB, "jpg", DAY)
    for _ in range(2):
        prediction_records.forget(store, JOB, DAY, "delivered")
    assert prediction_records.upload_key(store, JOB, DAY) is None
    assert not prediction_records.has_result(store, JOB) and not prediction_records.has_heatmap(store, JOB)
    assert prediction_records.is_deleted(store, JOB) and prediction_records.deletion_reason(store, JOB) == "delivered"
