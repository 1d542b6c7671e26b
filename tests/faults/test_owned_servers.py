"""The owned servers really go down and come back with their data."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from shared.errors import BrokerUnavailable, StorageUnavailable
from shared.messaging import admin
from shared.storage.s3 import S3Store
from tests.support.rabbitmq_node import RabbitNode
from tests.support.seaweedfs import SeaweedS3

QUEUE = "owned-broker-smoke"
OBJECT_KEY = "uploads/smoke/object.bin"
PAYLOAD = bytes(range(256)) * 64


def test_a_quorum_queue_and_its_confirmed_persistent_message_survive_a_broker_kill(own_broker: RabbitNode) -> None:
    admin.declare_quorum_queue(own_broker.amqp_url, QUEUE)
    admin.publish_raw(own_broker.amqp_url, "", QUEUE, b"kept", mandatory=True)  # persistent, confirmed

    own_broker.kill()
    with pytest.raises(BrokerUnavailable):
        admin.ping(own_broker.amqp_url, timeout_s=0)
    own_broker.start()

    kept = admin.get_one(own_broker.amqp_url, QUEUE)
    assert kept is not None, "the queue is there but empty"
    assert kept.body == b"kept"


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
