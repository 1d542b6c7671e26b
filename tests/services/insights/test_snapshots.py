"""Incremental snapshots on the real S3 endpoint: new images cost work, known ones do not."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

from services.insights.snapshots import RefreshCancelled, SnapshotBuilder
from shared import metrics
from shared.dataset import DatasetImage
from shared.storage import ObjectStore, get_json, layout
from tests.services.insights.support import LIMITS, distinct_png, put_images


class CountingStore:
    """A real store that counts reads of dataset images (the expensive part of the work; not
    collection records)."""

    def __init__(self, inner: ObjectStore) -> None:
        self.inner = inner
        self.image_reads = 0

    def get(self, key: str) -> bytes:
        if DatasetImage.from_key(key) is not None:
            self.image_reads += 1
        return self.inner.get(key)

    def put(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> None:
        self.inner.put(key, data, content_type)

    def exists(self, key: str) -> bool:
        return self.inner.exists(key)

    def delete(self, key: str) -> None:
        self.inner.delete(key)

    def list(self, prefix: str) -> Iterator[str]:
        return self.inner.list(prefix)

    def ping(self) -> None:
        self.inner.ping()


def builder(store: ObjectStore) -> SnapshotBuilder:
    return SnapshotBuilder(store, threads=2, **LIMITS)


@pytest.fixture
def counting(store: ObjectStore) -> CountingStore:
    return CountingStore(store)


def test_a_first_refresh_computes_every_image_and_writes_cache_entries_and_the_snapshot(
    counting: CountingStore,
) -> None:
    put_images(counting, [distinct_png(index) for index in range(5)])
    snapshot = builder(counting).refresh()
    assert snapshot["work"]["computed"] == 5 and snapshot["work"]["cached"] == 0
    assert counting.image_reads == 5
    assert len(list(counting.list("insights/cache/"))) == 5
    assert get_json(counting, layout.INSIGHTS_SNAPSHOT) == snapshot
    assert snapshot["counts"]["train"]["benign"] == 5


def test_adding_three_images_computes_only_those_three(counting: CountingStore) -> None:
    put_images(counting, [distinct_png(index) for index in range(6)])
    running = builder(counting)
    running.refresh()
    reads_before = counting.image_reads
    put_images(counting, [distinct_png(index) for index in range(100, 103)], "clinic-a", label="malignant")
    snapshot = running.refresh()
    assert snapshot["work"]["computed"] == 3 and snapshot["work"]["cached"] == 6
    assert counting.image_reads - reads_before == 3
    assert snapshot["image_count"] == 9
    assert snapshot["collections"]["clinic-a"]["counts"]["train"]["malignant"] == 3


def test_a_snapshot_counts_each_collection_separately_and_knows_the_external_one(counting: CountingStore) -> None:
    put_images(counting, [distinct_png(index) for index in range(3)], "ham10000", "train", "benign")
    put_images(counting, [distinct_png(index) for index in range(10, 12)], "ham10000", "test", "malignant")
    # An external collection: held out whole, so its images are all in `test`.
    put_images(counting, [distinct_png(index) for index in range(20, 24)], "derm7pt", None, "malignant", external=True)
    put_images(counting, [distinct_png(30)], "derm7pt", None, "benign", external=True)
    snapshot = builder(counting).refresh()
    assert snapshot["collections"] == {
        "derm7pt": {
            "external": True,
            "counts": {"train": {"benign": 0, "malignant": 0}, "test": {"benign": 1, "malignant": 4}},
        },
        "ham10000": {
            "external": False,
            "counts": {"train": {"benign": 3, "malignant": 0}, "test": {"benign": 0, "malignant": 2}},
        },
    }
    assert snapshot["counts"] == {"train": {"benign": 3, "malignant": 0}, "test": {"benign": 1, "malignant": 6}}
    assert snapshot["image_count"] == 10
    assert get_json(counting, layout.INSIGHTS_SNAPSHOT)["collections"] == snapshot["collections"]


def test_a_restarted_builder_reads_the_store_cache_instead_of_the_images(counting: CountingStore) -> None:
    put_images(counting, [distinct_png(index) for index in range(4)])
    builder(counting).refresh()
    put_images(counting, [distinct_png(200)])
    reads_before = counting.image_reads
    snapshot = builder(counting).refresh()  # a new process: empty memory, warm store cache
    assert snapshot["work"] == {"computed": 1, "cached": 4, "seconds": snapshot["work"]["seconds"]}
    assert counting.image_reads - reads_before == 1


def test_a_refresh_with_nothing_new_reads_no_image(counting: CountingStore) -> None:
    put_images(counting, [distinct_png(index) for index in range(3)])
    running = builder(counting)
    first = running.refresh()
    reads_before = counting.image_reads
    second = running.refresh()
    assert counting.image_reads == reads_before
    assert second["work"]["computed"] == 0
    assert second["computed_at"] >= first["computed_at"]
    assert {key: second[key] for key in ("counts", "intensity", "sizes")} == {
        key: first[key] for key in ("counts", "intensity", "sizes")
    }


def test_a_damaged_cache_entry_is_computed_again(counting: CountingStore) -> None:
    put_images(counting, [distinct_png(7)])
    builder(counting).refresh()
    [cache_key] = counting.list("insights/cache/")
    counting.put(cache_key, b"{not json")
    assert builder(counting).refresh()["work"]["computed"] == 1


def test_a_refresh_asked_to_stop_raises_cancelled_and_writes_no_snapshot(counting: CountingStore) -> None:
    put_images(counting, [distinct_png(index) for index in range(3)])
    stop = threading.Event()
    stop.set()
    with pytest.raises(RefreshCancelled):
        builder(counting).refresh(stop)
    assert not counting.exists(layout.INSIGHTS_SNAPSHOT)


def test_a_refresh_updates_the_metrics(counting: CountingStore) -> None:
    put_images(counting, [distinct_png(index) for index in range(2)])
    images_before = metrics.INSIGHTS_IMAGES._value.get()
    snapshot = builder(counting).refresh()
    assert metrics.INSIGHTS_IMAGES._value.get() - images_before == 2
    assert metrics.INSIGHTS_SNAPSHOT_TIME._value.get() == snapshot["computed_at"]
