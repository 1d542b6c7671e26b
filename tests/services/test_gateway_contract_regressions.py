"""Bugs schemathesis found against the OpenAPI document, each pinned by one test.

Like test_gateway_input.py, the app runs in-process (Flask's test client) against the real
RabbitMQ and the suite's S3 endpoint.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from flask import Flask
from flask.testing import FlaskClient

from shared.settings import Settings


@pytest.fixture
def http(s3_settings: Settings, gateway: Callable[..., Flask]) -> FlaskClient:
    return gateway(s3_settings).test_client()


@pytest.mark.parametrize("day", ["87046402", "20261399", "20260230", "00000000"])
def test_a_prediction_id_with_a_day_that_does_not_exist_gets_400_not_500(http: FlaskClient, day: str) -> None:
    # The id pattern takes any eight digits; the day in it was parsed unchecked (ValueError: 500).
    response = http.get(f"/api/v1/predictions/{day}-451a74640ae85a8f35b8e23c41e04447")
    assert response.status_code == 400, response.get_data(as_text=True)
    assert response.get_json()["error"]["code"] == "bad_input"


def test_a_well_formed_unknown_prediction_id_still_gets_404(http: FlaskClient) -> None:
    response = http.get("/api/v1/predictions/20261129-451a74640ae85a8f35b8e23c41e04447")
    assert response.status_code == 404, response.get_data(as_text=True)


@pytest.mark.parametrize(
    "path",
    [
        "/api/v1/predictions/20261127-451a74640ae85a8f35b8e23c41e04447%0A",
        "/api/v1/training-jobs/20261127T173808Z-ad4a0b12%0A",
        "/api/v1/models/test-v1%0A",
        # Fullwidth digits: \d took them.
        "/api/v1/training-jobs/%EF%BC%92%EF%BC%90%EF%BC%92%EF%BC%96%EF%BC%91%EF%BC%91%EF%BC%92%EF%BC%97T173808Z-ad4a0b12",
    ],
)
def test_an_id_with_a_trailing_newline_or_foreign_digits_gets_400(http: FlaskClient, path: str) -> None:
    # Python's "$" also matches before a trailing newline: such an id passed the check and reached
    # the store as a key with a newline, whose refusal came back as 503 "storage unavailable".
    response = http.get(path)
    assert response.status_code == 400, response.get_data(as_text=True)
    assert response.get_json()["error"]["code"] == "bad_input"


def test_promoting_a_version_with_a_trailing_newline_gets_400(http: FlaskClient) -> None:
    response = http.post("/api/v1/models/test-v1%0A/promote")
    assert response.status_code == 400, response.get_data(as_text=True)
