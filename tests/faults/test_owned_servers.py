"""The owned servers really go down and come back with their data."""

from __future__ import annotations

from collections.abc import Callable

import pika
import pytest

from shared.errors import StorageUnavailable
from shared.storage.s3 import S3Store
from tests.support.rabbitmq_node import RabbitNode
from tests.support.seaweedfs import SeaweedS3

QUEUE = "owned-broker-smoke"
OBJECT_KEY = "uploads/smoke/object.bin"
PAYLOAD = bytes(range(256)) * 64


def _connect(amqp_url: str) -> pika.BlockingConnection:
    return pika.BlockingConnection(pika.URLParameters(amqp_url + "?socket_timeout=5&connection_attempts=1"))


def test_a_quorum_queue_and_its_confirmed_persistent_message_survive_a_broker_kill(own_broker: RabbitNode) -> None:
    connection = _connect(own_broker.amqp_url)
    channel = connection.channel()
    channel.confirm_delivery()
    channel.queue_declare(QUEUE, durable=True, arguments={"x-queue-type": "quorum"})
    channel.basic_publish("", QUEUE, b"kept", pika.BasicProperties(delivery_mode=2), mandatory=True)
    connection.close()

    own_broker.kill()
    with pytest.raises(pika.exceptions.AMQPConnectionError):
        _connect(own_broker.amqp_url)
    own_broker.start()

    connection = _connect(own_broker.amqp_url)
    try:
        method, _, body = connection.channel().basic_get(QUEUE, auto_ack=True)
    finally:
        connection.close()
    assert method is not None, "the queue is there but empty"
    assert body == b"kept"


STORE_CALLS_WHILE_DOWN: dict[str, Callable[[S3Store], object]] = {
    "get": lambda store: store.get(OBJECT_KEY),
    "put": lambda store: store.put("uploads/smoke/other.bin", b"x"),
    "exists": lambda store: store.exists(OBJECT_KEY),
    "list": lambda store: list(store.list("uploads/")),
    "delete": lambda store: store.delete(OBJECT_KEY),
    "ping": lambda store: store.ping(),
}


def test_an_object_survives_an_s3_kill_and_the_store_is_unavailable_while_down(own_s3: SeaweedS3) -> None:
    store = S3Store(own_s3.endpoint, own_s3.access_key, own_s3.secret_key, bucket_prefix="smoke-", timeout_s=2)
    store.put(OBJECT_KEY, PAYLOAD)

    own_s3.kill()
    for name, call in STORE_CALLS_WHILE_DOWN.items():
        with pytest.raises(StorageUnavailable):
            call(store)
            pytest.fail(f"{name} succeeded while S3 was down")
    own_s3.start()

    assert store.get(OBJECT_KEY) == PAYLOAD
    assert list(store.list("uploads/")) == [OBJECT_KEY]
