"""A large upload leaves a model-sized copy beside its stripped original; deleting the job removes both.

Real RabbitMQ and the real S3 endpoint, the gateway in-process (Flask's test client).
"""

from __future__ import annotations

import io
from collections.abc import Callable

import numpy as np
import pytest
from flask import Flask
from PIL import Image

from services.gateway.predictions import _parse_job_id
from shared.images import MODEL_INPUT_EXTENSION, decode_model_input, model_input_from_bytes
from shared.prediction_records import forget
from shared.settings import Settings
from shared.storage import ObjectStore, create_store


@pytest.fixture
def store(s3_settings: Settings) -> ObjectStore:
    return create_store(s3_settings)


@pytest.fixture
def app(s3_settings: Settings, store: ObjectStore, gateway: Callable[..., Flask]) -> Flask:
    return gateway(s3_settings, store)


def camera_jpeg(size: tuple[int, int]) -> bytes:
    pixels = np.random.default_rng(0).integers(0, 256, (size[1] // 50, size[0] // 50, 3), np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).resize(size, Image.Resampling.BICUBIC).save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def post(app: Flask, data: bytes) -> str:
    response = app.test_client().post(
        "/api/v1/predictions?wait=false",
        data={"file": (io.BytesIO(data), "lesion.jpg")},
        content_type="multipart/form-data",
    )
    assert response.status_code == 202, response.get_json()
    return response.get_json()["id"]


def test_a_large_upload_gets_a_model_copy_that_is_deleted_with_it(app: Flask, store: ObjectStore) -> None:
    data = camera_jpeg((2000, 1500))
    job_id = post(app, data)
    keys = sorted(key for key in store.list("uploads/") if job_id in key)
    assert [key.rsplit(".", 1)[-1] for key in keys] == ["jpg", "npy"]
    copy = decode_model_input(store.get(next(key for key in keys if key.endswith(MODEL_INPUT_EXTENSION))))
    assert np.array_equal(copy, model_input_from_bytes(data, max_bytes=10**8, max_pixels=10**8))
    forget(store, job_id, _parse_job_id(job_id), "deleted on request")
    assert [key for key in store.list("uploads/") if job_id in key] == []


def test_a_small_upload_gets_no_copy(app: Flask, store: ObjectStore) -> None:
    job_id = post(app, camera_jpeg((600, 450)))
    assert [key.rsplit(".", 1)[-1] for key in store.list("uploads/") if job_id in key] == ["jpg"]
