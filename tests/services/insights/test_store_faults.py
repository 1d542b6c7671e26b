"""The insights service across a store outage, on a real S3 server (SeaweedFS) this test kills."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from services.insights.consumer import InsightsConsumer
from services.insights.snapshots import SnapshotBuilder
from shared.errors import ObjectNotFound, StorageUnavailable
from shared.messaging.rabbitmq import publish_event
from shared.messaging.schemas import Event
from shared.messaging.topology import EVENT_DATASET_CHANGED, Topology
from shared.settings import Settings
from shared.storage import ObjectStore, create_store, get_json, layout
from tests.conftest import AMQP_URL
from tests.faults import conftest as fault_servers
from tests.services.insights.support import LIMITS, distinct_png, put_images
from tests.support.network import waiting
from tests.support.seaweedfs import SeaweedS3
from tests.support.system import RunningSystem, ServiceProcess, running_system, system_env

WAIT_S = 90

# The fault tests' own S3 server (SeaweedFS), which a test may kill and start again.
own_s3 = fault_servers.own_s3


@pytest.fixture
def settings(own_s3: SeaweedS3, namespace: str) -> Settings:
    return own_s3.settings(broker_namespace=namespace, amqp_url=AMQP_URL)


@pytest.fixture
def system(settings: Settings, output_dir: Path, request: pytest.FixtureRequest) -> Iterator[RunningSystem]:
    with running_system(system_env(settings), output_dir / "logs" / request.node.name) as running:
        yield running


wait_until = waiting(WAIT_S, interval_s=0.2)


def image_count(store: ObjectStore) -> int | None:
    """The latest snapshot's image count; None without a snapshot or while the store is away."""
    try:
        snapshot: dict[str, Any] = get_json(store, layout.INSIGHTS_SNAPSHOT)
    except (ObjectNotFound, StorageUnavailable):
        return None
    return snapshot["image_count"]


def probe(service: ServiceProcess, path: str) -> requests.Response:
    return requests.get(f"http://127.0.0.1:{service.port}{path}", timeout=10)


def announce_change(settings: Settings) -> None:
    event = Event(name=EVENT_DATASET_CHANGED, event_id=uuid.uuid4().hex, occurred_at=time.time(), data={})
    topology = Topology.from_settings(settings)
    publish_event(settings.amqp_url, topology.events_exchange, event, routing_key=EVENT_DATASET_CHANGED)


def test_insights_outlives_a_store_outage_and_catches_up_on_the_change_it_heard_meanwhile(
    system: RunningSystem, settings: Settings, own_s3: SeaweedS3
) -> None:
    store = create_store(settings)
    put_images(store, [distinct_png(index) for index in range(2)])
    service = system.start_service("insights", "services.insights", "insights_metrics_port")
    wait_until(lambda: image_count(store) == 2, "the start-up snapshot")

    # Images land, then the store goes away before insights hears of them.
    put_images(store, [distinct_png(index) for index in range(10, 13)], "clinic-a", label="malignant")
    own_s3.kill()
    announce_change(settings)
    wait_until(lambda: "refresh failed" in service.log_path.read_text(), "a refresh attempted without the store")
    time.sleep(3)  # a few retries' worth of outage
    assert service.process.poll() is None, "insights exited while the store was away"
    assert probe(service, "/healthz").json() == {
        "status": "ok",
        "checks": {"consumer": "alive", "retention_sweep": "alive", "drift_consumer": "alive", "drift_record": "alive"},
    }
    not_ready = probe(service, "/readyz")
    assert not_ready.status_code == 503, not_ready.text
    assert not_ready.json()["checks"]["broker"] == "ok" and not_ready.json()["checks"]["storage"] != "ok"

    own_s3.start()
    back = time.monotonic()
    # No new event: the refresh that failed is retried until it covers what changed.
    wait_until(lambda: image_count(store) == 5, "the snapshot caught up")
    print(f"snapshot caught up {time.monotonic() - back:.1f}s after the store came back")
    wait_until(lambda: probe(service, "/readyz").status_code == 200, "insights ready again", timeout_s=30)
    assert service.process.poll() is None
    assert service.stop() == 0, "SIGTERM still stops it cleanly"


class FirstRefreshBreaks(SnapshotBuilder):
    """A real builder whose first refresh fails with an error nobody planned for."""

    def __init__(self, store: ObjectStore) -> None:
        super().__init__(store, threads=2, **LIMITS)
        self.attempts = 0

    def refresh(self, stop: threading.Event | None = None) -> dict[str, Any]:
        self.attempts += 1
        if self.attempts == 1:
            raise RuntimeError("a bug in one refresh")
        return super().refresh(stop)


def test_an_unexpected_refresh_error_is_retried_not_the_end_of_the_consumer(
    s3_settings: Settings, store: ObjectStore
) -> None:
    put_images(store, [distinct_png(index) for index in range(3)])
    builder = FirstRefreshBreaks(store)
    consumer = InsightsConsumer(s3_settings, builder, settle_s=0.2, max_backoff_s=1)
    thread = threading.Thread(target=consumer.run, daemon=True)
    thread.start()
    try:
        wait_until(lambda: image_count(store) == 3, "a snapshot after the failed refresh", timeout_s=30)
        assert builder.attempts == 2
        assert thread.is_alive() and consumer.connected.is_set()
    finally:
        consumer.stopping.set()
        thread.join(timeout=10)
    assert not thread.is_alive(), "the consumer did not stop"
