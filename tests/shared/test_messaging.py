"""The broker topology and publishing against the real RabbitMQ."""

from __future__ import annotations

import time

import pika
import pytest
from pika.adapters.blocking_connection import BlockingChannel

from shared.errors import BrokerUnavailable, MessageDecodeError, Overloaded
from shared.messaging.rabbitmq import connect, publish
from shared.messaging.schemas import SCHEMA_VERSION, Event, PredictionJob, PredictionResult
from shared.messaging.topology import Topology


def job(number: int) -> PredictionJob:
    return PredictionJob(job_id=f"job-{number}", image_key=f"uploads/x/{number}.jpg", submitted_at=1.0)


@pytest.fixture
def topology(namespace: str) -> Topology:
    return Topology(namespace, predict_max_length=5, delivery_limit=2)


@pytest.fixture
def channel(amqp_url: str, topology: Topology) -> BlockingChannel:
    connection = connect(amqp_url, timeout_s=10)
    channel = connection.channel()
    topology.declare(channel)
    channel.confirm_delivery()
    yield channel
    connection.close()


def get_one(channel: BlockingChannel, queue: str, timeout_s: float = 10.0) -> tuple:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        method, properties, body = channel.basic_get(queue)
        if method is not None:
            return method, properties, body
        time.sleep(0.05)
    raise AssertionError(f"no message on {queue} within {timeout_s}s")


def test_a_confirmed_job_is_durable_json_with_id_and_schema_version(
    channel: BlockingChannel, topology: Topology
) -> None:
    publish(channel, "", topology.predict_queue, job(1))
    method, properties, body = get_one(channel, topology.predict_queue)
    channel.basic_ack(method.delivery_tag)
    assert PredictionJob.decode(body) == job(1)
    assert properties.message_id == "job-1"
    assert properties.content_type == "application/json"
    assert properties.delivery_mode == 2
    assert properties.headers["schema_version"] == SCHEMA_VERSION
    assert properties.timestamp > 0


def test_declaring_the_topology_twice_is_harmless(channel: BlockingChannel, topology: Topology) -> None:
    topology.declare(channel)
    declared = channel.queue_declare(topology.predict_queue, passive=True)
    assert declared.method.message_count == 0


def test_a_full_predict_queue_rejects_the_publish_as_overloaded(channel: BlockingChannel, topology: Topology) -> None:
    # Quorum queues check the bound before enqueueing, so they can hold one over the limit.
    accepted = 0
    with pytest.raises(Overloaded):
        for number in range(topology.predict_max_length + 2):
            publish(channel, "", topology.predict_queue, job(number))
            accepted += 1
    assert topology.predict_max_length <= accepted <= topology.predict_max_length + 1
    assert channel.queue_declare(topology.predict_queue, passive=True).method.message_count == accepted


def test_publishing_to_a_queue_that_does_not_exist_is_an_error(channel: BlockingChannel) -> None:
    with pytest.raises(BrokerUnavailable):
        publish(channel, "", "no-such-queue-anywhere", job(1))


def test_a_consumer_that_dies_without_acking_gets_its_job_redelivered(
    amqp_url: str, channel: BlockingChannel, topology: Topology
) -> None:
    publish(channel, "", topology.predict_queue, job(7))
    doomed = connect(amqp_url, timeout_s=10)
    doomed_channel = doomed.channel()
    method, _, _ = get_one(doomed_channel, topology.predict_queue)
    assert not method.redelivered
    doomed.close()  # gone without ack, as a killed worker would be
    method, _, body = get_one(channel, topology.predict_queue)
    channel.basic_ack(method.delivery_tag)
    assert method.redelivered
    assert PredictionJob.decode(body).job_id == "job-7"


def test_a_poison_job_is_dead_lettered_after_the_delivery_limit(channel: BlockingChannel, topology: Topology) -> None:
    publish(channel, "", topology.predict_queue, job(13))
    for _ in range(topology.delivery_limit + 1):
        method, _, _ = get_one(channel, topology.predict_queue)
        channel.basic_nack(method.delivery_tag, requeue=True)
    method, properties, body = get_one(channel, Topology.dead_letter_queue(topology.predict_queue))
    channel.basic_ack(method.delivery_tag)
    assert PredictionJob.decode(body).job_id == "job-13"
    assert properties.headers["x-death"][0]["queue"] == topology.predict_queue
    assert channel.queue_declare(topology.predict_queue, passive=True).method.message_count == 0


def test_a_rejected_job_goes_straight_to_the_dead_letter_queue(channel: BlockingChannel, topology: Topology) -> None:
    publish(channel, "", topology.predict_queue, job(21))
    method, _, _ = get_one(channel, topology.predict_queue)
    channel.basic_reject(method.delivery_tag, requeue=False)
    method, _, body = get_one(channel, Topology.dead_letter_queue(topology.predict_queue))
    channel.basic_ack(method.delivery_tag)
    assert PredictionJob.decode(body).job_id == "job-21"


def test_events_reach_a_queue_bound_to_their_topic(channel: BlockingChannel, topology: Topology) -> None:
    queue = channel.queue_declare("", exclusive=True).method.queue
    channel.queue_bind(queue, topology.events_exchange, routing_key="model.*")
    event = Event(name="model.promoted", event_id="e1", occurred_at=2.0, data={"version": "v2"})
    channel.basic_publish(topology.events_exchange, "model.promoted", event.encode(), pika.BasicProperties())
    channel.basic_publish(topology.events_exchange, "dataset.changed", event.encode(), pika.BasicProperties())
    _, _, body = get_one(channel, queue)
    assert Event.decode(body).data == {"version": "v2"}
    assert channel.basic_get(queue)[0] is None


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
