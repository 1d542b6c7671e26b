"""Both store implementations pass the same contract, the S3 one over real HTTP."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from shared.errors import BadInput, ObjectNotFound, StorageUnavailable
from shared.settings import Settings
from shared.storage import ObjectStore, create_store, get_json, put_json
from shared.storage.filesystem import FilesystemStore
from shared.storage.s3 import S3Store


@pytest.fixture(params=["filesystem", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> ObjectStore:
    if request.param == "filesystem":
        return FilesystemStore(tmp_path / "store")
    endpoint = request.getfixturevalue("s3_endpoint")
    prefix = f"contract-{tmp_path.name[-8:].lower().replace('_', '-')}-"
    return S3Store(endpoint, "testing", "testing", bucket_prefix=prefix)


def test_a_stored_object_reads_back_byte_for_byte(store: ObjectStore) -> None:
    data = bytes(range(256)) * 100
    store.put("uploads/predictions/2026/11/27/a.jpg", data, "image/jpeg")
    assert store.get("uploads/predictions/2026/11/27/a.jpg") == data


def test_put_replaces_the_previous_object(store: ObjectStore) -> None:
    store.put("results/predictions/x.json", b"old")
    store.put("results/predictions/x.json", b"new")
    assert store.get("results/predictions/x.json") == b"new"


def test_a_missing_key_raises_object_not_found(store: ObjectStore) -> None:
    with pytest.raises(ObjectNotFound):
        store.get("results/predictions/none.json")
    assert not store.exists("results/predictions/none.json")


def test_exists_sees_stored_objects_only(store: ObjectStore) -> None:
    store.put("datasets/train/benign/abc.jpg", b"x")
    assert store.exists("datasets/train/benign/abc.jpg")
    assert not store.exists("datasets/train/benign/abd.jpg")


def test_delete_removes_and_tolerates_absent_keys(store: ObjectStore) -> None:
    store.put("training/jobs/j.json", b"{}")
    store.delete("training/jobs/j.json")
    store.delete("training/jobs/j.json")
    assert not store.exists("training/jobs/j.json")


def test_list_returns_keys_under_a_prefix_in_order(store: ObjectStore) -> None:
    for name in ("b", "a", "c"):
        store.put(f"datasets/train/benign/{name}.jpg", b"x")
    store.put("datasets/train/malignant/z.jpg", b"x")
    store.put("datasets/test/benign/q.jpg", b"x")
    assert list(store.list("datasets/train/benign/")) == [
        "datasets/train/benign/a.jpg",
        "datasets/train/benign/b.jpg",
        "datasets/train/benign/c.jpg",
    ]
    assert len(list(store.list("datasets/train/"))) == 4
    assert list(store.list("insights/cache/")) == []


def test_json_documents_round_trip(store: ObjectStore) -> None:
    put_json(store, "models/aliases/production.json", {"version": "v1", "n": [1, 2]})
    assert get_json(store, "models/aliases/production.json") == {"version": "v1", "n": [1, 2]}


UNSAFE_KEYS = ["", "uploads", "uploads/", "../etc/passwd", "uploads/../../x", "uploads//x", "uploads/./x"]


@pytest.mark.parametrize("key", UNSAFE_KEYS)
def test_unsafe_keys_are_refused(store: ObjectStore, key: str) -> None:
    with pytest.raises(BadInput):
        store.put(key, b"x")


def test_concurrent_writers_leave_one_whole_object(store: ObjectStore) -> None:
    payloads = [bytes([i]) * 50_000 for i in range(8)]
    threads = [threading.Thread(target=store.put, args=("results/predictions/race.json", p)) for p in payloads]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert store.get("results/predictions/race.json") in payloads


def test_the_store_answers_ping(store: ObjectStore) -> None:
    store.ping()


def test_an_unreachable_s3_endpoint_is_storage_unavailable() -> None:
    store = S3Store("127.0.0.1:9", "a", "b", timeout_s=0.5)
    with pytest.raises(StorageUnavailable):
        store.put("uploads/x.jpg", b"x")


def test_settings_choose_s3_only_when_an_endpoint_is_set(tmp_path: Path) -> None:
    assert isinstance(create_store(Settings(store_dir=tmp_path)), FilesystemStore)
    assert isinstance(create_store(Settings(s3_endpoint="127.0.0.1:9000")), S3Store)
