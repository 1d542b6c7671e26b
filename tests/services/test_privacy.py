"""What a patient's image leaves behind, through the API: metadata stripped before storing,
deletion on request, 410 Gone after deletion or expiry, the retention in the config.

The app runs in-process (Flask's test client) against the real RabbitMQ, with the filesystem
store and the real S3 server in turn.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient
from PIL import Image

from shared.dataset import iter_images
from shared.messaging.schemas import PredictionResult
from shared.settings import Settings
from shared.storage import ObjectStore, create_store, layout, put_json
from tests.support.gateway import in_process_gateway
from tests.support.images import encode
from tests.support.imports import import_queued

TOKEN = "privacy-test-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def gps_jpeg(value: int = 120) -> bytes:
    exif = Image.Exif()
    exif[0x010F] = "PhoneMaker"
    exif.get_ifd(0x8825).update({1: "N", 2: (45.0, 45.0, 36.0), 3: "E", 4: (4.0, 50.0, 24.0)})
    return encode(Image.new("RGB", (64, 48), (value, value // 2, 30)), "JPEG", exif=exif.tobytes())


@pytest.fixture(params=["filesystem", "s3"])
def settings(request: pytest.FixtureRequest, s3_settings: Settings, tmp_path: Path) -> Settings:
    values = {**s3_settings.__dict__, "write_token": TOKEN, "predict_timeout_s": 2.0}
    if request.param == "filesystem":
        values.update(s3_endpoint="", store_dir=tmp_path / "store")
    return Settings(**values)


@pytest.fixture
def store(settings: Settings) -> ObjectStore:
    return create_store(settings)


@pytest.fixture
def http(settings: Settings, store: ObjectStore, gateway: Callable[..., Flask]) -> FlaskClient:
    return gateway(settings, store).test_client()


def submit(http: FlaskClient, data: bytes, filename: str = "lesion.jpg") -> str:
    response = http.post(
        "/api/v1/predictions?wait=false",
        data={"file": (io.BytesIO(data), filename)},
        content_type="multipart/form-data",
    )
    assert response.status_code == 202, response.get_data(as_text=True)
    return response.get_json()["id"]


def stored_result(store: ObjectStore, job_id: str, submitted_at: float) -> None:
    """A worker's result, as the worker writes it."""
    result = PredictionResult(
        job_id=job_id,
        label="benign",
        probability_malignant=0.1,
        threshold=0.5,
        model_version="test-v1",
        submitted_at=submitted_at,
        completed_at=submitted_at + 0.1,
    )
    put_json(store, layout.prediction_result(job_id), dataclasses.asdict(result))


def test_a_jpeg_with_gps_exif_comes_out_of_the_store_without_it(http: FlaskClient, store: ObjectStore) -> None:
    original = gps_jpeg()
    assert Image.open(io.BytesIO(original)).getexif().get_ifd(0x8825)
    job_id = submit(http, original)
    [key] = store.list("uploads/predictions/")
    assert key.endswith(f"/{job_id}.jpg")
    kept = Image.open(io.BytesIO(store.get(key)))
    assert dict(kept.getexif()) == {} and kept.getexif().get_ifd(0x8825) == {}
    assert b"PhoneMaker" not in store.get(key)


def test_a_labelled_upload_is_stored_stripped_under_the_hash_of_what_is_stored(
    http: FlaskClient, store: ObjectStore, settings: Settings
) -> None:
    original = gps_jpeg(200)
    response = http.post(
        "/api/v1/datasets/uploads",
        headers=AUTH,
        content_type="multipart/form-data",
        data={"label": "benign", "file": (io.BytesIO(original), "with-gps.jpg")},
    )
    assert response.status_code == 200 and response.get_json()["added"] == 1
    staged = [key for key in store.list(layout.DATASET_STAGING_PREFIX) if not key.endswith("/manifest.json")]
    assert [b"PhoneMaker" in store.get(key) for key in staged] == [False], "stripped before it is staged"
    import_queued(settings, store)  # the trainer's part
    [image] = iter_images(store)
    key, part = image.key, response.get_json()["files"][0]["part"]
    kept = store.get(key)
    assert b"PhoneMaker" not in kept and dict(Image.open(io.BytesIO(kept)).getexif()) == {}
    assert key == layout.dataset_image("uploads", part, "benign", hashlib.sha256(kept).hexdigest(), "jpg")
    # The same file again, and the same picture without its EXIF: both duplicates of what is stored.
    files = [(io.BytesIO(original), "again.jpg"), (io.BytesIO(kept), "stripped.jpg")]
    again = http.post(
        "/api/v1/datasets/uploads",
        headers=AUTH,
        content_type="multipart/form-data",
        data={"label": "benign", "file": files},
    ).get_json()
    assert (again["added"], again["duplicates"]) == (0, 2)
    assert [image.key for image in iter_images(store)] == [key]


def test_deleting_a_prediction_removes_its_image_and_result_and_is_idempotent(
    http: FlaskClient, store: ObjectStore
) -> None:
    job_id = submit(http, gps_jpeg())
    stored_result(store, job_id, time.time())
    assert http.delete(f"/api/v1/predictions/{job_id}").status_code == 401  # a write needs the token
    assert http.get(f"/api/v1/predictions/{job_id}").status_code == 200
    assert http.delete(f"/api/v1/predictions/{job_id}", headers=AUTH).status_code == 204
    assert list(store.list("uploads/predictions/")) == []
    assert list(store.list("results/predictions/")) == []
    gone = http.get(f"/api/v1/predictions/{job_id}")
    assert gone.status_code == 410
    assert gone.get_json()["error"]["code"] == "gone" and "deleted on request" in gone.get_json()["error"]["message"]
    assert http.delete(f"/api/v1/predictions/{job_id}", headers=AUTH).status_code == 204


def test_an_unknown_id_gets_404_and_one_past_the_retention_gets_410(http: FlaskClient) -> None:
    unknown = f"{datetime.now(UTC):%Y%m%d}-{uuid.uuid4().hex}"
    assert http.get(f"/api/v1/predictions/{unknown}").status_code == 404
    assert http.delete(f"/api/v1/predictions/{unknown}", headers=AUTH).status_code == 404
    expired = f"{datetime.now(UTC) - timedelta(days=31):%Y%m%d}-{uuid.uuid4().hex}"
    response = http.get(f"/api/v1/predictions/{expired}")
    assert response.status_code == 410 and "30 days" in response.get_json()["error"]["message"]
    assert http.delete(f"/api/v1/predictions/{expired}", headers=AUTH).status_code == 204


def test_a_result_past_the_retention_is_gone_even_before_the_sweep(http: FlaskClient, store: ObjectStore) -> None:
    day = datetime.now(UTC) - timedelta(days=31)
    job_id = f"{day:%Y%m%d}-{uuid.uuid4().hex}"
    stored_result(store, job_id, day.timestamp())
    assert http.get(f"/api/v1/predictions/{job_id}").status_code == 410


def test_the_config_says_how_long_images_are_kept(http: FlaskClient) -> None:
    config = http.get("/api/v1/config").get_json()
    assert config["prediction_retention_days"] == 30
    assert "30 days" in config["prediction_retention"]


def test_with_retention_zero_a_polled_answer_is_delivered_once(settings: Settings, store: ObjectStore) -> None:
    zero = Settings(**{**settings.__dict__, "prediction_retention_days": 0})
    with in_process_gateway(zero, store) as app:
        http = app.test_client()
        job_id = submit(http, gps_jpeg())
        assert http.get(f"/api/v1/predictions/{job_id}").get_json()["status"] == "pending"
        stored_result(store, job_id, time.time())
        assert http.get(f"/api/v1/predictions/{job_id}").get_json()["label"] == "benign"
        assert list(store.list("uploads/predictions/")) == list(store.list("results/predictions/")) == []
        assert http.get(f"/api/v1/predictions/{job_id}").status_code == 410
        assert "once the answer is delivered" in http.get("/api/v1/config").get_json()["prediction_retention"]
