"""Retention: the sweep deletes expired predictions from either store and nothing else; S3 also
gets lifecycle rules (checked on the real S3 server)."""

from __future__ import annotations

import os
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from shared.prediction_records import forget
from shared.retention import DAY_S, HOUR_S, RetentionPolicy, apply_store_expiry, sweep
from shared.storage import ObjectStore, layout
from shared.storage.filesystem import FilesystemStore
from shared.storage.s3 import S3Store

KEPT_FOREVER = ("datasets/train/benign/" + "a" * 64 + ".jpg", "models/aliases/production.json", "training/jobs/x.json")


@pytest.fixture(params=["filesystem", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> ObjectStore:
    if request.param == "filesystem":
        return FilesystemStore(tmp_path / "store")
    return S3Store(
        request.getfixturevalue("s3_endpoint"), "testing", "testing", bucket_prefix=f"r{uuid.uuid4().hex[:10]}-"
    )


def job_id(day: datetime) -> str:
    return f"{day:%Y%m%d}-{uuid.uuid4().hex}"


def store_prediction(store: ObjectStore, day: datetime) -> list[str]:
    """An upload, a result, a heat map and a tombstone of one job of `day`; their keys."""
    job = job_id(day)
    keys = [
        layout.prediction_upload(job, "jpg", day),
        layout.prediction_result(job),
        layout.prediction_heatmap(job),
        layout.prediction_tombstone(job),
    ]
    for key in keys:
        store.put(key, b"x")
    return keys


def all_keys(store: ObjectStore) -> set[str]:
    return {key for bucket in layout.BUCKETS for key in store.list(f"{bucket}/")}


def test_everything_a_prediction_left_is_deleted_after_the_retention_and_nothing_else(store: ObjectStore) -> None:
    today = datetime.now(UTC)
    predictions = store_prediction(store, today) + store_prediction(store, today)
    for key in KEPT_FOREVER:
        store.put(key, b"keep")
    policy = RetentionPolicy(days=30)
    assert sweep(store, policy).deleted == 0  # all fresh
    assert all_keys(store) == {*predictions, *KEPT_FOREVER}
    report = sweep(store, policy, now=time.time() + 30 * DAY_S + 60)
    assert report.deleted == len(predictions)
    assert all_keys(store) == set(KEPT_FOREVER)


def test_with_retention_zero_nothing_outlives_an_hour(store: ObjectStore) -> None:
    keys = store_prediction(store, datetime.now(UTC))
    policy = RetentionPolicy(days=0)
    assert sweep(store, policy, now=time.time() + 0.5 * HOUR_S).deleted == 0
    assert sweep(store, policy, now=time.time() + HOUR_S + 60).deleted == len(keys)


def test_the_sweep_on_the_filesystem_deletes_the_old_and_keeps_the_new_in_one_pass(tmp_path: Path) -> None:
    store = FilesystemStore(tmp_path / "store")
    now = datetime.now(UTC)
    old_day = now - timedelta(days=40)
    old = store_prediction(store, old_day)
    for key in old:  # what the clock would have written 40 days ago
        stamp = old_day.timestamp()
        os.utime(tmp_path / "store" / key, (stamp, stamp))
    new = store_prediction(store, now)
    report = sweep(store, RetentionPolicy(days=30))
    assert report.deleted == len(old)
    assert all_keys(store) == set(new)
    # Keys of days after the cutoff are not even examined: the walk stops at the first one.
    assert report.examined == len(old)


def test_forgetting_a_prediction_leaves_only_its_tombstone(store: ObjectStore) -> None:
    day = datetime.now(UTC)
    job = job_id(day)
    store.put(layout.prediction_upload(job, "png", day), b"image")
    store.put(layout.prediction_result(job), b"{}")
    store.put(layout.prediction_heatmap(job), b"png")
    forget(store, job, day, "deleted on request")
    forget(store, job, day, "deleted on request")  # idempotent
    assert all_keys(store) == {layout.prediction_tombstone(job)}


@pytest.mark.parametrize(("days", "rule_days"), [(30, 30), (0, 1)])
def test_the_s3_store_gets_lifecycle_rules_for_predictions_only(s3_endpoint: str, days: int, rule_days: int) -> None:
    store = S3Store(s3_endpoint, "testing", "testing", bucket_prefix=f"lc{uuid.uuid4().hex[:10]}-")
    store.put(KEPT_FOREVER[0], b"keep")
    assert apply_store_expiry(store, RetentionPolicy(days=days)) is True
    assert store.expiry_rules("uploads") == {"predictions/": rule_days}
    assert store.expiry_rules("results") == {
        "predictions/": rule_days,
        "heatmaps/": rule_days,
        "tombstones/": rule_days,
    }
    assert store.expiry_rules("datasets") == {}


def test_the_filesystem_store_says_it_has_no_lifecycle_rules(tmp_path: Path) -> None:
    assert apply_store_expiry(FilesystemStore(tmp_path), RetentionPolicy(days=30)) is False
