"""With no write token, writes come only from the gateway's own pages or from clients that
are not browsers: another site's page cannot promote, train, upload or delete (issue 22).

In-process app, real RabbitMQ and S3 endpoint.
"""

from __future__ import annotations

import io
from collections.abc import Callable

import pytest
from flask import Flask
from flask.testing import FlaskClient

from shared.messaging.topology import Topology
from shared.serving import registry
from shared.settings import Settings
from shared.storage import ObjectStore, create_store
from tests.support.broker import message_count
from tests.support.gateway import in_process_gateway
from tests.support.images import noise_png

OWN_ORIGIN = "http://localhost"  # the Flask test client's host
CROSS_SITE = [
    {"Sec-Fetch-Site": "cross-site", "Origin": "https://elsewhere.example"},
    {"Sec-Fetch-Site": "same-site", "Origin": "https://evil.localhost"},
    {"Origin": "https://elsewhere.example"},  # a browser without Fetch Metadata
    {"Origin": "null"},  # a sandboxed frame or a local file
]
OWN = [
    {"Sec-Fetch-Site": "same-origin", "Origin": OWN_ORIGIN},
    {"Origin": OWN_ORIGIN},
    {},  # curl, scripts: no browser headers
]


def settings_with(s3_settings: Settings, token: str) -> Settings:
    return Settings(**{**s3_settings.__dict__, "write_token": token})


@pytest.fixture
def store(s3_settings: Settings) -> ObjectStore:
    return create_store(s3_settings)


@pytest.fixture
def open_gateway(s3_settings: Settings, store: ObjectStore, gateway: Callable[..., Flask]) -> FlaskClient:
    """A gateway with no write token, as `make run` starts by default."""
    return gateway(settings_with(s3_settings, ""), store).test_client()


def second_version(store: ObjectStore) -> None:
    card = registry.read_card(store, "test-v1").document
    registry.publish_version(store, "test-v2", {"model.onnx": store.get("models/versions/test-v1/model.onnx")}, card)


@pytest.mark.parametrize("headers", CROSS_SITE)
def test_another_sites_form_cannot_promote_train_or_upload_and_changes_nothing(
    headers: dict[str, str], open_gateway: FlaskClient, store: ObjectStore, s3_settings: Settings
) -> None:
    second_version(store)
    form = {"label": "benign", "file": (io.BytesIO(noise_png(1)), "a.png")}
    answers = [
        open_gateway.post("/api/v1/models/test-v2/promote", headers=headers, data={"reason": "x"}),
        open_gateway.post("/api/v1/training-jobs", headers=headers, data={"epochs": "1"}),
        open_gateway.post("/api/v1/datasets/uploads", headers=headers, data=form, content_type="multipart/form-data"),
    ]
    assert [answer.status_code for answer in answers] == [403] * 3
    assert all(answer.get_json()["error"]["code"] == "cross_site_write" for answer in answers)
    assert "own pages" in answers[0].get_json()["error"]["message"]
    assert registry.production_version(store) == "test-v1"
    assert list(store.list("datasets/")) == [] and list(store.list("training/")) == []
    assert list(store.list("uploads/")) == []
    assert message_count(s3_settings.amqp_url, Topology.from_settings(s3_settings).train_queue) == 0


@pytest.mark.parametrize("headers", OWN)
def test_the_gateways_own_pages_and_non_browser_clients_may_write(
    headers: dict[str, str], open_gateway: FlaskClient, store: ObjectStore
) -> None:
    second_version(store)
    promoted = open_gateway.post("/api/v1/models/test-v2/promote", headers=headers, json={})
    assert promoted.status_code == 200 and registry.production_version(store) == "test-v2"


def test_with_a_token_the_token_decides_wherever_the_request_comes_from(
    s3_settings: Settings, store: ObjectStore
) -> None:
    settings = settings_with(s3_settings, "t0ken")
    with in_process_gateway(settings, store) as app:
        http = app.test_client()
        second_version(store)  # after the app seeded the store with test-v1
        cross_site = {"Sec-Fetch-Site": "cross-site", "Origin": "https://elsewhere.example"}
        assert http.post("/api/v1/models/test-v2/promote", headers=cross_site).status_code == 401
        with_token = {**cross_site, "Authorization": "Bearer t0ken"}
        assert http.post("/api/v1/models/test-v2/promote", headers=with_token, json={}).status_code == 200
    assert registry.production_version(store) == "test-v2"
