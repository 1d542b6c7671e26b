"""Bad input gets a clear 4xx and changes nothing; odd but valid input is accepted.

The app runs in-process (Flask's test client) but talks to the real RabbitMQ and the real
S3 endpoint, so "changes nothing" is checked where it matters: the store and the queue.
"""

from __future__ import annotations

import io
from collections.abc import Callable

import pytest
from flask import Flask
from flask.testing import FlaskClient

from services.gateway.app import create_app
from shared.messaging.topology import Topology
from shared.settings import Settings
from shared.storage import ObjectStore, create_store
from tests.support.broker import connected_client, message_count
from tests.support.gateway import in_process_gateway
from tests.support.images import encode, invalid_images, solid_jpeg, valid_images

MAX_BYTES = 200_000
MAX_PIXELS = 2_000_000


@pytest.fixture
def settings(s3_settings: Settings) -> Settings:
    return Settings(
        **{
            **s3_settings.__dict__,
            "max_upload_bytes": MAX_BYTES,
            "max_image_pixels": MAX_PIXELS,
            "max_files_per_request": 4,
            "predict_timeout_s": 2.0,
        }
    )


@pytest.fixture
def store(settings: Settings) -> ObjectStore:
    return create_store(settings)


@pytest.fixture
def app(settings: Settings, store: ObjectStore, gateway: Callable[..., Flask]) -> Flask:
    return gateway(settings, store)


@pytest.fixture
def http(app: Flask) -> FlaskClient:
    return app.test_client()


def queued_jobs(settings: Settings) -> int:
    return message_count(settings.amqp_url, Topology.from_settings(settings).predict_queue)


def post_file(http: FlaskClient, data: bytes, filename: str = "lesion.jpg", query: str = "?wait=false"):
    return http.post(
        f"/api/v1/predictions{query}",
        data={"file": (io.BytesIO(data), filename)},
        content_type="multipart/form-data",
    )


def assert_nothing_changed(store: ObjectStore, settings: Settings) -> None:
    assert list(store.list("uploads/")) == []
    assert queued_jobs(settings) == 0


@pytest.mark.parametrize("name", sorted(invalid_images()))
def test_an_invalid_file_gets_a_clear_4xx_and_changes_nothing(
    name: str, http: FlaskClient, store: ObjectStore, settings: Settings
) -> None:
    data, status = invalid_images()[name]
    response = post_file(http, data)
    assert response.status_code == status, response.get_data(as_text=True)
    error = response.get_json()["error"]
    assert error["code"] and len(error["message"]) > 10
    assert_nothing_changed(store, settings)


def test_a_file_over_the_byte_limit_gets_413(http: FlaskClient, store: ObjectStore, settings: Settings) -> None:
    from PIL import Image

    noisy = encode(Image.effect_noise((400, 400), 100).convert("RGB"), "PNG")
    assert len(noisy) > MAX_BYTES
    response = post_file(http, noisy, "big.png")
    assert response.status_code == 413
    assert response.get_json()["error"]["code"] == "payload_too_large"
    assert_nothing_changed(store, settings)


def test_an_image_over_the_pixel_limit_gets_413(http: FlaskClient, store: ObjectStore, settings: Settings) -> None:
    from PIL import Image

    bomb = encode(Image.new("L", (2000, 1500)), "PNG")
    response = post_file(http, bomb, "bomb.png")
    assert response.status_code == 413
    assert response.get_json()["error"]["code"] == "image_too_large"
    assert_nothing_changed(store, settings)


def test_a_request_larger_than_every_file_allowed_gets_413(
    http: FlaskClient, store: ObjectStore, settings: Settings
) -> None:
    response = http.post(
        "/api/v1/predictions",
        data=b"x" * (4 * MAX_BYTES + 100_000),
        content_type="multipart/form-data; boundary=abc",
    )
    assert response.status_code == 413
    assert_nothing_changed(store, settings)


def test_a_form_without_a_file_field_gets_400(http: FlaskClient, store: ObjectStore, settings: Settings) -> None:
    response = http.post(
        "/api/v1/predictions", data={"image": (io.BytesIO(solid_jpeg(9)), "a.jpg")}, content_type="multipart/form-data"
    )
    assert response.status_code == 400
    assert "'file'" in response.get_json()["error"]["message"]
    assert_nothing_changed(store, settings)


@pytest.mark.parametrize(
    ("content_type", "body"),
    [("application/json", b'{"file": "x"}'), ("image/jpeg", solid_jpeg(50)), ("text/plain", b"hi"), (None, b"")],
)
def test_a_request_that_is_not_multipart_gets_415(
    content_type: str | None, body: bytes, http: FlaskClient, store: ObjectStore, settings: Settings
) -> None:
    headers = {"Content-Type": content_type} if content_type else {}
    response = http.post("/api/v1/predictions", data=body, headers=headers)
    assert response.status_code == 415
    assert "multipart/form-data" in response.get_json()["error"]["message"]
    assert_nothing_changed(store, settings)


def test_too_many_files_in_one_request_get_400(http: FlaskClient, store: ObjectStore, settings: Settings) -> None:

    files = [(io.BytesIO(solid_jpeg(40)), f"{index}.jpg") for index in range(5)]
    response = http.post("/api/v1/predictions?wait=false", data={"file": files}, content_type="multipart/form-data")
    assert response.status_code == 400
    assert_nothing_changed(store, settings)


def test_one_bad_file_among_good_ones_refuses_the_whole_request(
    http: FlaskClient, store: ObjectStore, settings: Settings
) -> None:

    files = [(io.BytesIO(solid_jpeg(40)), "good.jpg"), (io.BytesIO(b"junk"), "bad.jpg")]
    response = http.post("/api/v1/predictions?wait=false", data={"file": files}, content_type="multipart/form-data")
    assert response.status_code == 422
    assert "file 2" in response.get_json()["error"]["message"]
    assert_nothing_changed(store, settings)


@pytest.mark.parametrize("name", sorted(valid_images()))
def test_odd_but_valid_images_are_accepted_and_queued(
    name: str, http: FlaskClient, store: ObjectStore, settings: Settings
) -> None:
    response = post_file(http, valid_images()[name], f"{name}.img")
    assert response.status_code == 202, response.get_data(as_text=True)
    assert response.get_json()["status"] == "pending"
    assert len(list(store.list("uploads/predictions/"))) == 1
    assert queued_jobs(settings) == 1


@pytest.mark.parametrize(
    "filename", ["../../etc/passwd", "x" * 5000, "💀🔬 lesion.jpg", "C:\\Windows\\x.jpg", "a/b/c.jpg", ""]
)
def test_a_client_file_name_is_never_used_as_a_path(
    filename: str, http: FlaskClient, store: ObjectStore, settings: Settings
) -> None:
    response = post_file(http, solid_jpeg(100), filename)
    assert response.status_code == 202
    job_id = response.get_json()["id"]
    [key] = store.list("uploads/predictions/")
    assert key.endswith(f"/{job_id}.jpg")
    assert key.startswith("uploads/predictions/")


def test_several_files_give_one_job_each(http: FlaskClient, store: ObjectStore, settings: Settings) -> None:

    files = [(io.BytesIO(solid_jpeg(value)), f"{value}.jpg") for value in (10, 100, 200)]
    response = http.post("/api/v1/predictions?wait=false", data={"file": files}, content_type="multipart/form-data")
    assert response.status_code == 202
    assert len(response.get_json()["predictions"]) == 3
    assert queued_jobs(settings) == 3


def test_a_full_queue_answers_503_with_retry_after(s3_settings: Settings, store: ObjectStore) -> None:
    settings = Settings(**{**s3_settings.__dict__, "predict_queue_max_length": 2})
    with in_process_gateway(settings, store) as app:
        http = app.test_client()
        statuses = [post_file(http, solid_jpeg(30)).status_code for _ in range(5)]
        assert statuses[:2] == [202, 202]
        assert 503 in statuses
        refused = post_file(http, solid_jpeg(30))
        assert refused.status_code == 503
        assert refused.headers["Retry-After"]
        assert refused.get_json()["error"]["code"] == "overloaded"
        # Only the accepted jobs' uploads remain: a refused request leaves nothing behind.
        assert len(list(store.list("uploads/predictions/"))) == statuses.count(202) == queued_jobs(settings)


def test_a_multi_file_request_refused_part_way_withdraws_all_its_uploads(
    s3_settings: Settings, store: ObjectStore
) -> None:
    settings = Settings(**{**s3_settings.__dict__, "predict_queue_max_length": 2, "max_files_per_request": 4})
    with in_process_gateway(settings, store) as app:
        http = app.test_client()
        files = [(io.BytesIO(solid_jpeg(value)), f"{value}.jpg") for value in (10, 60, 110, 160)]
        response = http.post("/api/v1/predictions?wait=false", data={"file": files}, content_type="multipart/form-data")
        assert response.status_code == 503
        # The jobs published before the refusal are queued, but their images are gone: a
        # worker answers them "not found" without running the model.
        assert queued_jobs(settings) >= 2
        assert list(store.list("uploads/predictions/")) == []


@pytest.mark.slow  # waits out a broker that is not there: ~5 s
def test_without_a_broker_readiness_fails_and_predictions_get_503(s3_settings: Settings, store: ObjectStore) -> None:
    settings = Settings(**{**s3_settings.__dict__, "amqp_url": "amqp://guest:guest@127.0.0.1:9/%2F"})
    with connected_client(settings) as client:
        http = create_app(settings, store=store, broker_client=client).test_client()
        ready = http.get("/readyz")
        assert ready.status_code == 503
        assert ready.get_json()["checks"]["broker"] == "disconnected"
        response = post_file(http, solid_jpeg(30), query="")
        assert response.status_code == 503
        assert response.get_json()["error"]["code"] == "broker_unavailable"


@pytest.mark.parametrize("job_id", ["nope", "20261127-zz", "../../etc/passwd", "20261127-" + "0" * 32])
def test_unknown_or_malformed_prediction_ids_get_4xx(job_id: str, http: FlaskClient) -> None:
    response = http.get(f"/api/v1/predictions/{job_id}")
    assert response.status_code in {400, 404}
    assert response.get_json()["error"]["message"]


def test_metrics_and_health_endpoints_answer(http: FlaskClient) -> None:
    assert http.get("/healthz").status_code == 200
    assert http.get("/readyz").status_code == 200
    post_file(http, b"junk")
    assert (
        b'slc_http_requests_total{method="POST",route="/api/v1/predictions",status="422"}' in http.get("/metrics").data
    )
