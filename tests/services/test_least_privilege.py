"""Least privilege, seen from outside: each service's own credentials, made the deployment's
way, against a real SeaweedFS and a real RabbitMQ node.

The store runs with the deployment's identities file (deploy/images/seaweedfs/identities.json,
filled in as its entrypoint does); the broker node gets its users from bootstrap itself, through
the management API. Each boundary is tried with the credential it is meant to stop.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from services.bootstrap.access import BROKER_ONLY_SERVICES, SERVICES, user_name
from services.bootstrap.steps import prepare_broker, prepare_store
from shared import audit
from shared.errors import StorageAccessDenied
from shared.messaging import admin
from shared.messaging.topology import Topology
from shared.serving import registry
from shared.settings import REPO_ROOT, Settings
from shared.storage import create_store
from shared.storage.s3 import S3Store
from tests.support.rabbitmq_node import RabbitNode
from tests.support.seaweedfs import SeaweedS3

SECRETS = {service: f"{service}-secret-{index:04d}" for index, service in enumerate(SERVICES + BROKER_ONLY_SERVICES)}
ROOT_KEY, ROOT_SECRET = "testing", "testing"


def deployment_identities() -> list[dict[str, object]]:
    """The services' identities of the SeaweedFS image, with this test's secrets filled in."""
    text = (REPO_ROOT / "deploy/images/seaweedfs/identities.json").read_text()
    for service in SERVICES:
        text = text.replace(f"@SLC_{service.upper()}_SECRET@", SECRETS[service])
    identities = json.loads(text)["identities"]
    # The administrator's is the test server's own (ROOT_KEY).
    return [identity for identity in identities if identity["name"] != "admin"]


@pytest.fixture(scope="module")
def store_server(tmp_path_factory: pytest.TempPathFactory, models_dir: Path) -> Iterator[SeaweedS3]:
    server = SeaweedS3(
        tmp_path_factory.mktemp("least-privilege-s3"), ROOT_KEY, ROOT_SECRET, more_identities=deployment_identities()
    )
    server.start()
    try:
        # As in a deployment: bootstrap, with the administrator's keys, makes the buckets and
        # seeds the shipped model.
        prepare_store(server.settings(models_dir=models_dir))
        yield server
    finally:
        server.kill()


def store_of(server: SeaweedS3, service: str) -> S3Store:
    store = create_store(
        Settings(s3_endpoint=server.endpoint, s3_access_key=user_name(service), s3_secret_key=SECRETS[service])
    )
    assert isinstance(store, S3Store)
    return store


def production_card_key(server: SeaweedS3) -> str:
    version = registry.production_version(store_of(server, "worker"))
    assert version is not None
    return f"models/versions/{version}/card.json"


# (service, key): may that service's credentials write (put and delete) there?
WRITES = [
    ("gateway", "uploads/predictions/2026/12/06/job.png", True),
    ("gateway", "uploads/datasets/batch/manifest.json", True),
    ("gateway", "results/tombstones/job.json", True),
    ("gateway", "models/aliases/probe.json", True),
    ("gateway", "training/jobs/job.json", True),
    ("gateway", "datasets/clinic/train/benign/abc.png", False),
    ("gateway", "models/versions/forged/card.json", False),
    ("gateway", "insights/snapshots/latest.json", False),
    ("worker", "results/predictions/job.json", True),
    ("worker", "uploads/predictions/2026/12/06/job.png", False),
    ("worker", "datasets/clinic/train/benign/abc.png", False),
    ("worker", "models/aliases/probe.json", False),
    ("trainer", "datasets/clinic/train/benign/abc.png", True),
    ("trainer", "models/versions/new/card.json", True),
    ("trainer", "uploads/predictions/2026/12/06/job.png", False),
    ("trainer", "results/predictions/job.json", False),
    ("insights", "insights/snapshots/latest.json", True),
    ("insights", "uploads/predictions/2026/12/06/job.png", True),
    ("insights", "datasets/clinic/train/benign/abc.png", False),
    ("insights", "models/aliases/probe.json", False),
]


@pytest.mark.parametrize(("service", "key", "allowed"), WRITES, ids=[f"{s}:{k}" for s, k, _ in WRITES])
def test_each_service_writes_only_its_own_part_of_the_store(
    store_server: SeaweedS3, service: str, key: str, allowed: bool
) -> None:
    store = store_of(store_server, service)
    root = store_server.settings()
    if allowed:
        store.put(key, b"probe")
        assert store.get(key) == b"probe"
        store.delete(key)
        assert not store.exists(key)
        return
    with pytest.raises(StorageAccessDenied):
        store.put(key, b"forged")
    assert not create_store(root).exists(key)


def test_the_gateway_cannot_delete_a_model_version_but_can_promote_and_audit(store_server: SeaweedS3) -> None:
    gateway = store_of(store_server, "gateway")
    card = production_card_key(store_server)
    with pytest.raises(StorageAccessDenied):
        gateway.delete(card)
    assert gateway.exists(card)
    version = registry.production_version(gateway)
    assert version is not None
    # A promotion (a rollback to the same version here) and its audit entry are the gateway's to write.
    audit.record(gateway, "promote", {"credential": "write-token", "origin": "test"}, version=version)
    registry.promote(gateway, version, reason="least-privilege test")
    assert registry.production_version(gateway) == version


def test_every_service_reads_the_production_model(store_server: SeaweedS3) -> None:
    for service in SERVICES:
        store = store_of(store_server, service)
        store.ping()
        assert store.get(production_card_key(store_server))


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RabbitNode]:
    """A node of our own with the management API, its users made by bootstrap."""
    node = RabbitNode(tmp_path_factory.mktemp("least-privilege-broker"), management=True)
    node.start()
    try:
        secrets = {f"{service}_secret": secret for service, secret in SECRETS.items()}
        prepare_broker(Settings(amqp_url=node.amqp_url, rabbitmq_management_url=node.management_url, **secrets))
        yield node
    finally:
        node.kill()


def channel_of(node: RabbitNode, service: str) -> Any:
    url = f"amqp://{user_name(service)}:{SECRETS[service]}@127.0.0.1:{node.amqp_port}/%2F"
    return admin.bare_channel(url)


def refused(action: Callable[[], object]) -> bool:
    """Whether the broker closes the channel with 403 ACCESS_REFUSED for `action`."""
    try:
        action()
    except Exception as error:
        if admin.refusal_code(error) is None:
            raise
        assert admin.refusal_code(error) == 403, error
        return True
    return False


TOPOLOGY = Topology("", 2000, 5, declares=False)


@pytest.mark.parametrize("service", SERVICES + BROKER_ONLY_SERVICES)
def test_no_service_may_declare_or_delete_a_queue(broker: RabbitNode, service: str) -> None:
    assert refused(lambda: channel_of(broker, service).queue_declare("rogue", durable=True))
    assert refused(lambda: channel_of(broker, service).queue_delete(TOPOLOGY.predict_queue))
    assert refused(lambda: channel_of(broker, service).exchange_declare("rogue", "topic"))
    # What bootstrap declared is checked, without any permission, by every one of them.
    TOPOLOGY.prepare(channel_of(broker, service))


def test_each_service_consumes_only_its_own_queues(broker: RabbitNode) -> None:
    own = {
        "gateway": [],
        "worker": [TOPOLOGY.predict_queue, TOPOLOGY.heatmap_queue],
        "trainer": [TOPOLOGY.train_queue, TOPOLOGY.dataset_import_queue],
        "insights": [TOPOLOGY.insights_queue, TOPOLOGY.drift_queue],
        "keda": [],
    }
    for service, queues in own.items():
        for queue in TOPOLOGY.queues:
            channel = channel_of(broker, service)
            may_consume = not refused(partial(channel.basic_consume, queue, lambda *_: None))
            # Closed at once: a consumer left open would take the jobs later tests publish.
            channel.connection.close()
            expected = queue in queues or (service == "worker" and queue.startswith(TOPOLOGY.predict_queue + ".dead"))
            assert may_consume == expected, (service, queue)


def test_the_gateway_publishes_jobs_and_the_worker_answers_only_through_its_own_queue(broker: RabbitNode) -> None:
    gateway = channel_of(broker, "gateway")
    gateway.confirm_delivery()
    gateway.basic_publish("", TOPOLOGY.predict_queue, b"{}", mandatory=True)
    worker = channel_of(broker, "worker")
    method, _properties, _body = worker.basic_get(TOPOLOGY.predict_queue, auto_ack=True)
    assert method is not None
    # The worker's exclusive queue for model events: a server-named one, bound to `events`.
    declared = worker.queue_declare("", exclusive=True, auto_delete=True)
    worker.queue_bind(declared.method.queue, TOPOLOGY.events_exchange, routing_key="model.promoted")
    insights = channel_of(broker, "insights")
    insights.confirm_delivery()
    assert refused(lambda: insights.basic_publish(TOPOLOGY.events_exchange, "model.promoted", b"{}"))
