"""Shared fixtures: the real RabbitMQ, a real S3 server (SeaweedFS), test models.

Integration tests fail, not skip, when RabbitMQ is missing: CI must provide it.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from shared.errors import BrokerUnavailable
from shared.messaging import admin
from shared.messaging.topology import Topology
from shared.settings import REPO_ROOT, Settings
from tests.support.onnx_models import brightness_model, write_models_dir
from tests.support.seaweedfs import SeaweedS3
from tests.support.tiers import mark_by_needs

AMQP_URL = os.environ.get("TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2F")
OUTPUT_DIR = REPO_ROOT / "test-output"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Markers for what each test needs (tests/support/tiers.py): `make test-fast` leaves those out."""
    mark_by_needs(items, config.rootpath.as_posix())


@pytest.fixture(scope="session")
def output_dir() -> Path:
    OUTPUT_DIR.mkdir(exist_ok=True)
    return OUTPUT_DIR


@pytest.fixture(scope="session")
def amqp_url() -> str:
    try:
        admin.ping(AMQP_URL, timeout_s=3)
    except BrokerUnavailable as error:
        pytest.fail(f"RabbitMQ is not reachable at {AMQP_URL}: {error!r} (start it: rabbitmq-server -detached)")
    return AMQP_URL


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedS3]:
    """A real S3 server (SeaweedFS) on free ports, for the whole session; tests must not kill it."""
    server = SeaweedS3(tmp_path_factory.mktemp("seaweedfs"))
    try:
        server.start()
        yield server
    finally:
        server.kill()  # its data dir is thrown away: a clean stop would only cost ~15 s


@pytest.fixture(scope="session")
def s3_endpoint(s3_server: SeaweedS3) -> str:
    """`127.0.0.1:PORT` of the session's S3 server."""
    return s3_server.endpoint


@pytest.fixture
def namespace(amqp_url: str) -> Iterator[str]:
    """A fresh prefix for queue and exchange names; everything under it is deleted after."""
    prefix = f"test-{uuid.uuid4().hex[:8]}."
    yield prefix
    topology = Topology(prefix, predict_max_length=0, delivery_limit=0)
    admin.delete_queues(amqp_url, topology.queues, topology.exchanges)


@pytest.fixture(scope="session")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A shipped-models folder holding the brightness test model as production."""
    root = tmp_path_factory.mktemp("models")
    return write_models_dir(root, {"test-v1": brightness_model()}, production="test-v1")


@pytest.fixture
def s3_settings(s3_server: SeaweedS3, namespace: str, models_dir: Path) -> Settings:
    bucket_prefix = namespace.replace(".", "").lower() + "-"
    return s3_server.settings(
        broker_namespace=namespace, amqp_url=AMQP_URL, s3_bucket_prefix=bucket_prefix, models_dir=models_dir
    )
