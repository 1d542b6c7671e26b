"""The out-of-domain judgement end to end, on real parts: the shipped model in a worker process,
RabbitMQ, an S3 endpoint, the gateway. A version packaged with domain statistics answers with
them, stores the class activation, counts the warnings per version and announces the scores
for the drift monitor; an older version (the test model) says they are not available."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import requests

from shared.messaging.delivery import Delivery
from shared.messaging.rabbitmq import open_channel
from shared.messaging.schemas import Event
from shared.messaging.topology import EVENT_PREDICTIONS_SCORED, Topology
from shared.settings import Settings
from shared.storage import create_store, get_json, layout
from tests.support.images import grainy_jpeg, solid_jpeg
from tests.support.onnx_models import copy_shipped_production
from tests.support.system import running_system, system_env


@pytest.fixture
def shipped_models(tmp_path: Path) -> Path:
    return copy_shipped_production(tmp_path / "models")


@pytest.fixture
def scored_events(s3_settings: Settings) -> Iterator[Callable[[], list[Delivery]]]:
    """The `predictions.scored` events published during the test, heard on a queue of its own."""
    topology = Topology.from_settings(s3_settings)
    heard: list[Delivery] = []
    with open_channel(s3_settings.amqp_url, topology=topology) as channel:
        channel.subscribe_to_events(topology.events_exchange, EVENT_PREDICTIONS_SCORED, heard.append)

        def events() -> list[Delivery]:
            channel.serve(1.0)  # take in what the broker sent meanwhile
            return heard

        yield events


def _predict(url: str, image: bytes) -> dict:
    response = requests.post(f"{url}/api/v1/predictions", files={"file": ("x.jpg", image, "image/jpeg")}, timeout=60)
    assert response.status_code == 200, response.text
    return response.json()


def test_a_version_with_domain_statistics_answers_with_them_and_tells_the_drift_monitor(
    s3_settings: Settings, shipped_models: Path, scored_events, output_dir: Path, request: pytest.FixtureRequest
) -> None:
    env = system_env(s3_settings, shipped_models)
    with running_system(env, output_dir / "logs" / request.node.name, worker=True, gateway=True) as running:
        flat = _predict(running.gateway_url, solid_jpeg(128, (224, 224)))
        grainy = _predict(running.gateway_url, grainy_jpeg(150, (300, 200)))
        metrics_text = requests.get(f"http://127.0.0.1:{running.services[0].port}/metrics", timeout=10).text
    for answer in (flat, grainy):
        domain = answer["domain"]
        assert domain["available"] is True and domain["score"] > 0
        assert isinstance(domain["unlike_training"], bool) and isinstance(domain["not_dermoscopy"], bool)
        assert "class_activation" not in answer  # stored for the heat map, not part of the answer
    # One flat grey square is nothing like a dermatoscope image of a lesion.
    assert flat["domain"]["unlike_training"] is True and flat["domain"]["score"] > 1
    version = flat["model_version"]
    stored = get_json(create_store(s3_settings), layout.prediction_result(flat["id"]))
    assert len(stored["class_activation"]) == 7 and all(len(row) == 7 for row in stored["class_activation"])
    assert f'slc_domain_warnings_total{{model_version="{version}",warning="unlike_training"}}' in metrics_text
    assert f'slc_domain_score_count{{model_version="{version}"}} 2.0' in metrics_text
    scored = [prediction for event in scored_events() for prediction in Event.decode(event.body).data["predictions"]]
    assert len(scored) == 2 and {round(p["score"], 4) for p in scored} == {
        flat["domain"]["score"],
        grainy["domain"]["score"],
    }
    assert all(len(p["projection"]) == 16 for p in scored)


def test_a_version_without_domain_statistics_says_they_are_not_available(
    s3_settings: Settings, models_dir: Path, output_dir: Path, request: pytest.FixtureRequest
) -> None:
    env = system_env(s3_settings, models_dir)
    with running_system(env, output_dir / "logs" / request.node.name, worker=True, gateway=True) as running:
        answer = _predict(running.gateway_url, solid_jpeg(230))
        polled = requests.get(f"{running.gateway_url}/api/v1/predictions/{answer['id']}", timeout=10).json()
    for seen in (answer, polled):
        assert seen["label"] == "malignant"  # the probability is still answered
        assert seen["domain"]["available"] is False and seen["domain"]["score"] is None
        assert "test-v1" in seen["domain"]["reason"]
