"""Dead prediction jobs: a client polling one sees `failed` with the reason; one command replays them.

Real parts: the machine's RabbitMQ (a test namespace), the suite's S3 server, a worker and a
gateway as processes.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import requests

from services.gateway.predictions import new_job_id
from shared.messaging import admin
from shared.messaging.channel import Channel
from shared.messaging.rabbitmq import open_channel
from shared.messaging.schemas import PredictionJob
from shared.messaging.topology import Topology
from shared.settings import REPO_ROOT, Settings
from shared.storage import create_store, layout
from tests.support.broker import message_count
from tests.support.images import solid_jpeg
from tests.support.system import RunningSystem, system_env

DELIVERY_LIMIT = 1


@pytest.fixture
def settings(s3_settings: Settings) -> Settings:
    return dataclasses.replace(s3_settings, delivery_limit=DELIVERY_LIMIT)


@pytest.fixture
def system(
    settings: Settings, models_dir: Path, output_dir: Path, request: pytest.FixtureRequest
) -> Iterator[RunningSystem]:
    log_dir = output_dir / "logs" / request.node.name
    log_dir.mkdir(parents=True, exist_ok=True)
    running = RunningSystem(system_env(settings, models_dir, delivery_limit=DELIVERY_LIMIT), log_dir)
    try:
        yield running
    finally:
        running.stop()


def submit_job(settings: Settings, channel: Channel) -> str:
    """Store an image and queue its job, as the gateway does."""
    now = datetime.now(UTC)
    job_id = new_job_id(now)
    key = layout.prediction_upload(job_id, "jpg", now)
    create_store(settings).put(key, solid_jpeg(230), "image/jpeg")
    channel.publish("", Topology.from_settings(settings).predict_queue, PredictionJob(job_id, key, time.time()))
    return job_id


def exhaust_deliveries(amqp_url: str, queue: str, count: int) -> None:
    """Take the job `count` times and drop the connection each time, as dying workers would."""
    for _ in range(count):
        with open_channel(amqp_url, timeout_s=10) as channel:
            deadline = time.monotonic() + 10
            while channel.get(queue) is None:
                assert time.monotonic() < deadline, f"no job on {queue}"
                time.sleep(0.05)
        # The connection closed with the job unacked: back to the queue, one delivery spent.


def wait_for_status(gateway_url: str, job_id: str, wanted: str, timeout_s: float = 30) -> dict:
    deadline = time.monotonic() + timeout_s
    while True:
        answer = requests.get(f"{gateway_url}/api/v1/predictions/{job_id}", timeout=10).json()
        if answer["status"] == wanted or time.monotonic() > deadline:
            return answer
        time.sleep(0.1)


def replay_dead_letters(settings: Settings, models_dir: Path) -> dict[str, int]:
    completed = subprocess.run(
        [sys.executable, "-m", "services.worker", "replay-dead-letters"],
        env={**system_env(settings, models_dir, delivery_limit=DELIVERY_LIMIT), "PYTHONPATH": str(REPO_ROOT)},
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert completed.returncode == 0, completed.stderr
    return json.loads(completed.stdout.strip().splitlines()[-1])


def test_a_job_that_outlives_its_deliveries_reads_failed_and_a_replay_answers_it(
    system: RunningSystem, settings: Settings, models_dir: Path
) -> None:
    topology = Topology.from_settings(settings)
    with open_channel(settings.amqp_url, topology=topology, confirms=True, timeout_s=10) as channel:
        job_id = submit_job(settings, channel)
    exhaust_deliveries(settings.amqp_url, topology.predict_queue, DELIVERY_LIMIT + 1)
    system.start_worker()
    system.start_gateway()

    failed = wait_for_status(system.gateway_url, job_id, "failed")
    assert failed["status"] == "failed", failed
    assert failed["error"]["code"] == "dead_lettered"
    assert "every delivery it was allowed" in failed["error"]["message"]
    assert message_count(settings.amqp_url, Topology.dead_letter_queue(topology.predict_queue)) == 1

    assert replay_dead_letters(settings, models_dir) == {"replayed": 1, "answered": 0, "kept": 0}
    done = wait_for_status(system.gateway_url, job_id, "done")
    assert done["status"] == "done" and done["label"] == "malignant", done
    assert message_count(settings.amqp_url, Topology.dead_letter_queue(topology.predict_queue)) == 0


def test_an_undecodable_job_is_dead_lettered_by_the_worker_and_kept_by_a_replay(
    system: RunningSystem, settings: Settings, models_dir: Path
) -> None:
    topology = Topology.from_settings(settings)
    system.start_worker()
    admin.publish_raw(settings.amqp_url, "", topology.predict_queue, b"not json")
    dead_queue = Topology.dead_letter_queue(topology.predict_queue)
    deadline = time.monotonic() + 30
    while message_count(settings.amqp_url, dead_queue) == 0 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert message_count(settings.amqp_url, dead_queue) == 1
    assert replay_dead_letters(settings, models_dir) == {"replayed": 0, "answered": 0, "kept": 1}
    assert message_count(settings.amqp_url, dead_queue) == 1
