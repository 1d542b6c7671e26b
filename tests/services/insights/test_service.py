"""The insights service as a real process, on the real RabbitMQ and S3 endpoint."""

from __future__ import annotations

import time
import uuid
from typing import Any

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from shared.errors import ObjectNotFound
from shared.messaging.rabbitmq import publish_event
from shared.messaging.schemas import Event
from shared.messaging.topology import EVENT_DATASET_CHANGED, Topology
from shared.settings import Settings
from shared.storage import ObjectStore, get_json, layout
from tests.services.insights.support import distinct_png, put_images
from tests.support.system import RunningSystem


def snapshot(store: ObjectStore) -> dict[str, Any] | None:
    try:
        return get_json(store, layout.INSIGHTS_SNAPSHOT)
    except ObjectNotFound:
        return None


def metric_samples(exposition: str) -> dict[str, float]:
    """Unlabelled samples of a Prometheus text exposition, by name."""
    return {
        sample.name: sample.value
        for family in text_string_to_metric_families(exposition)
        for sample in family.samples
        if not sample.labels
    }


def wait_for_snapshot(store: ObjectStore, image_count: int, timeout_s: float = 30) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        current = snapshot(store)
        if current is not None and current["image_count"] == image_count:
            return current
        time.sleep(0.1)
    raise AssertionError(f"no snapshot of {image_count} images within {timeout_s}s; last: {snapshot(store)}")


def test_the_service_snapshots_at_start_and_again_after_a_dataset_changed_event(
    system: RunningSystem, s3_settings: Settings, store: ObjectStore
) -> None:
    put_images(store, [distinct_png(index) for index in range(2)])
    service = system.start_service("insights", "services.insights", "insights_metrics_port")
    first = wait_for_snapshot(store, 2)
    assert first["work"]["computed"] == 2

    put_images(store, [distinct_png(index) for index in range(10, 13)], "clinic-a", label="malignant")
    event = Event(name=EVENT_DATASET_CHANGED, event_id=uuid.uuid4().hex, occurred_at=time.time(), data={"added": 3})
    publish_event(
        s3_settings.amqp_url,
        Topology.from_settings(s3_settings).events_exchange,
        event,
        routing_key=EVENT_DATASET_CHANGED,
    )
    second = wait_for_snapshot(store, 5)
    assert second["collections"]["clinic-a"]["counts"]["train"] == {"benign": 0, "malignant": 3}
    assert second["work"] == {"computed": 3, "cached": 2, "seconds": second["work"]["seconds"]}

    base = f"http://127.0.0.1:{service.port}"
    samples = metric_samples(requests.get(f"{base}/metrics", timeout=5).text)
    assert samples["slc_insights_images_processed_total"] == 5
    assert samples["slc_insights_compute_seconds_count"] == 2
    assert samples["slc_insights_snapshot_timestamp_seconds"] == pytest.approx(second["computed_at"])
    assert requests.get(f"{base}/readyz", timeout=5).json() == {
        "ready": True,
        "checks": {"broker": "ok", "storage": "ok"},
    }
    assert service.stop() == 0, "SIGTERM stops the service cleanly"
