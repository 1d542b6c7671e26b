"""The broker topology and publishing against the real RabbitMQ, through shared/messaging's Channel."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from shared.errors import BrokerUnavailable, MessageDecodeError, Overloaded
from shared.messaging.channel import Channel
from shared.messaging.delivery import Delivery
from shared.messaging.rabbitmq import connect, open_channel, prepare_topology
from shared.messaging.schemas import SCHEMA_VERSION, Event, PredictionJob, PredictionResult
from shared.messaging.topology import Topology


def job(number: int) -> PredictionJob:
    return PredictionJob(job_id=f"job-{number}", image_key=f"uploads/x/{number}.jpg", submitted_at=1.0)


@pytest.fixture
def topology(namespace: str) -> Topology:
    return Topology(namespace, predict_max_length=5, delivery_limit=2)


@pytest.fixture
def channel(amqp_url: str, topology: Topology) -> Iterator[Channel]:
    with open_channel(amqp_url, topology=topology, confirms=True, timeout_s=10) as channel:
        yield channel


def get_one(channel: Channel, queue: str, timeout_s: float = 10.0) -> Delivery:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        delivery = channel.get(queue)
        if delivery is not None:
            return delivery
        time.sleep(0.05)
    raise AssertionError(f"no message on {queue} within {timeout_s}s")


def test_a_confirmed_job_is_durable_json_with_id_and_schema_version(channel: Channel, topology: Topology) -> None:
    channel.publish("", topology.predict_queue, job(1))
    delivery = get_one(channel, topology.predict_queue)
    channel.ack(delivery.tag)
    assert PredictionJob.decode(delivery.body) == job(1)
    assert delivery.message_id == "job-1"
    assert delivery.content_type == "application/json"
    assert delivery.persistent
    assert delivery.headers["schema_version"] == SCHEMA_VERSION
    assert delivery.timestamp > 0


def test_declaring_the_topology_twice_is_harmless(amqp_url: str, channel: Channel, topology: Topology) -> None:
    prepare_topology(amqp_url, topology, declare=True)
    assert channel.queue_depth(topology.predict_queue) == 0


def test_a_full_predict_queue_rejects_the_publish_as_overloaded(channel: Channel, topology: Topology) -> None:
    # Quorum queues check the bound before enqueueing, so they can hold one over the limit.
    accepted = 0
    with pytest.raises(Overloaded):
        for number in range(topology.predict_max_length + 2):
            channel.publish("", topology.predict_queue, job(number))
            accepted += 1
    assert topology.predict_max_length <= accepted <= topology.predict_max_length + 1
    assert channel.queue_depth(topology.predict_queue) == accepted


def test_publishing_to_a_queue_that_does_not_exist_is_an_error(channel: Channel) -> None:
    with pytest.raises(BrokerUnavailable):
        channel.publish("", "no-such-queue-anywhere", job(1))


def test_a_consumer_that_dies_without_acking_gets_its_job_redelivered(
    amqp_url: str, channel: Channel, topology: Topology
) -> None:
    channel.publish("", topology.predict_queue, job(7))
    with open_channel(amqp_url, timeout_s=10) as doomed:
        assert not get_one(doomed, topology.predict_queue).redelivered
    # Gone without ack, as a killed worker would be.
    delivery = get_one(channel, topology.predict_queue)
    channel.ack(delivery.tag)
    assert delivery.redelivered
    assert PredictionJob.decode(delivery.body).job_id == "job-7"


def test_a_poison_job_is_dead_lettered_after_the_delivery_limit(channel: Channel, topology: Topology) -> None:
    channel.publish("", topology.predict_queue, job(13))
    for _ in range(topology.delivery_limit + 1):
        channel.requeue(get_one(channel, topology.predict_queue).tag)
    dead = get_one(channel, Topology.dead_letter_queue(topology.predict_queue))
    channel.ack(dead.tag)
    assert PredictionJob.decode(dead.body).job_id == "job-13"
    assert dead.headers["x-death"][0]["queue"] == topology.predict_queue
    assert dead.header("x-first-death-reason") == "delivery_limit"
    assert channel.queue_depth(topology.predict_queue) == 0


def test_a_rejected_job_goes_straight_to_the_dead_letter_queue(channel: Channel, topology: Topology) -> None:
    channel.publish("", topology.predict_queue, job(21))
    channel.reject(get_one(channel, topology.predict_queue).tag)
    dead = get_one(channel, Topology.dead_letter_queue(topology.predict_queue))
    channel.ack(dead.tag)
    assert PredictionJob.decode(dead.body).job_id == "job-21"
    assert dead.header("x-first-death-reason") == "rejected"


def test_events_reach_a_subscriber_to_their_topic_only(channel: Channel, topology: Topology) -> None:
    heard: list[Delivery] = []
    channel.subscribe_to_events(topology.events_exchange, "model.*", heard.append)
    event = Event(name="model.promoted", event_id="e1", occurred_at=2.0, data={"version": "v2"})
    channel.publish(topology.events_exchange, "model.promoted", event, mandatory=False, persistent=False)
    channel.publish(topology.events_exchange, "dataset.changed", event, mandatory=False, persistent=False)
    deadline = time.monotonic() + 10
    while not heard and time.monotonic() < deadline:
        channel.serve(0.1)
    channel.serve(0.5)  # room for a wrongly routed second one to arrive
    assert [Event.decode(delivery.body).data for delivery in heard] == [{"version": "v2"}]


@pytest.mark.parametrize("body", [b"", b"not json", b"[1, 2]", b'{"job_id": "x"}', b'"string"'])
def test_malformed_bodies_raise_message_decode_error(body: bytes) -> None:
    with pytest.raises(MessageDecodeError):
        PredictionJob.decode(body)


def test_a_result_round_trips_and_ignores_unknown_fields() -> None:
    result = PredictionResult(job_id="j", label="benign", probability_malignant=0.1, threshold=0.5, model_version="v")
    assert PredictionResult.decode(result.encode()[:-1] + b',"future_field":1}') == result


def test_connecting_to_a_dead_broker_gives_up_after_the_timeout() -> None:
    started = time.monotonic()
    with pytest.raises(BrokerUnavailable):
        connect("amqp://guest:guest@127.0.0.1:9/%2F", timeout_s=1.0)
    assert time.monotonic() - started < 30
