"""The consume loop in-process, on the real RabbitMQ and S3 endpoint."""

from __future__ import annotations

import dataclasses
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from services.insights.consumer import InsightsConsumer
from services.insights.snapshots import SnapshotBuilder
from shared.messaging.rabbitmq import open_channel, publish_event
from shared.messaging.schemas import Event
from shared.messaging.topology import EVENT_DATASET_CHANGED, Topology
from shared.settings import Settings
from shared.storage import ObjectStore, get_json, layout
from tests.services.insights.support import LIMITS, distinct_png, put_images
from tests.support.broker import message_count
from tests.support.network import free_port, wait_until


class CountingBuilder(SnapshotBuilder):
    """A real builder that counts its refreshes."""

    def __init__(self, store: ObjectStore) -> None:
        super().__init__(store, threads=2, **LIMITS)
        self.refreshes = 0

    def refresh(self, stop: threading.Event | None = None) -> dict[str, Any]:
        snapshot = super().refresh(stop)
        self.refreshes += 1
        return snapshot


def dataset_changed(settings: Settings) -> None:
    event = Event(name=EVENT_DATASET_CHANGED, event_id=uuid.uuid4().hex, occurred_at=time.time(), data={"added": 1})
    publish_event(
        settings.amqp_url, Topology.from_settings(settings).events_exchange, event, routing_key=EVENT_DATASET_CHANGED
    )


def queued_events(settings: Settings) -> int:
    return message_count(settings.amqp_url, Topology.from_settings(settings).insights_queue)


@pytest.fixture
def start_consumer() -> Iterator[Callable[[Settings, SnapshotBuilder], InsightsConsumer]]:
    """Run consumers in threads; stop each and check it returns promptly."""
    running: list[tuple[InsightsConsumer, threading.Thread]] = []

    def start(settings: Settings, builder: SnapshotBuilder) -> InsightsConsumer:
        consumer = InsightsConsumer(settings, builder, settle_s=0.2, max_backoff_s=1)
        thread = threading.Thread(target=consumer.run, daemon=True)
        thread.start()
        running.append((consumer, thread))
        return consumer

    yield start
    for consumer, thread in running:
        consumer.stopping.set()
        thread.join(timeout=10)
        assert not thread.is_alive(), "the consumer did not stop"


def test_events_queued_before_start_coalesce_with_the_start_up_refresh(
    s3_settings: Settings, store: ObjectStore, start_consumer: Callable[..., InsightsConsumer]
) -> None:
    with open_channel(s3_settings.amqp_url, topology=Topology.from_settings(s3_settings)):
        pass  # the insights queue exists, so the events below wait in it
    put_images(store, [distinct_png(1), distinct_png(2)])
    for _ in range(5):
        dataset_changed(s3_settings)
    builder = CountingBuilder(store)
    consumer = start_consumer(s3_settings, builder)
    wait_until(lambda: builder.refreshes >= 1)
    time.sleep(1.0)  # room for a wrong second refresh to show up
    assert builder.refreshes == 1
    assert get_json(store, layout.INSIGHTS_SNAPSHOT)["image_count"] == 2
    consumer.stopping.set()
    wait_until(lambda: not consumer.connected.is_set())
    assert queued_events(s3_settings) == 0, "every event was acked, none returned on close"


def test_an_event_after_start_up_refreshes_once_with_the_new_images(
    s3_settings: Settings, store: ObjectStore, start_consumer: Callable[..., InsightsConsumer]
) -> None:
    builder = CountingBuilder(store)
    consumer = start_consumer(s3_settings, builder)
    wait_until(lambda: consumer.connected.is_set() and builder.refreshes == 1)
    assert get_json(store, layout.INSIGHTS_SNAPSHOT)["image_count"] == 0
    put_images(store, [distinct_png(index) for index in range(3)], "clinic-a")
    dataset_changed(s3_settings)
    dataset_changed(s3_settings)
    wait_until(lambda: builder.refreshes >= 2)
    time.sleep(1.0)
    assert builder.refreshes == 2, "two events in one burst give one refresh"
    snapshot = get_json(store, layout.INSIGHTS_SNAPSHOT)
    assert snapshot["collections"]["clinic-a"]["counts"]["train"]["benign"] == 3
    assert snapshot["work"]["computed"] == 3


@pytest.mark.slow  # waits out a broker that is not there: ~5 s
def test_without_a_broker_it_still_writes_the_start_up_snapshot_and_is_not_connected(
    s3_settings: Settings, store: ObjectStore, start_consumer: Callable[..., InsightsConsumer]
) -> None:
    nowhere = dataclasses.replace(s3_settings, amqp_url=f"amqp://guest:guest@127.0.0.1:{free_port()}/%2F")
    put_images(store, [distinct_png(9)])
    builder = CountingBuilder(store)
    consumer = start_consumer(nowhere, builder)
    wait_until(lambda: builder.refreshes == 1)
    assert get_json(store, layout.INSIGHTS_SNAPSHOT)["image_count"] == 1
    assert not consumer.connected.is_set()
