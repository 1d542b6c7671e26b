"""Servers a fault test owns: it may kill and restart them without disturbing any other test."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.rabbitmq_node import RabbitNode
from tests.support.seaweedfs import SeaweedS3


@pytest.fixture
def own_broker(tmp_path: Path) -> Iterator[RabbitNode]:
    """A started RabbitMQ node of this test's own; stopped at teardown whatever happened."""
    node = RabbitNode(tmp_path / "rabbitmq")
    try:
        node.start()
        yield node
    finally:
        node.stop()


@pytest.fixture
def own_s3(tmp_path: Path) -> Iterator[SeaweedS3]:
    """A started SeaweedFS S3 server of this test's own; killed at teardown (a clean stop takes ~15 s)."""
    server = SeaweedS3(tmp_path / "seaweedfs")
    try:
        server.start()
        yield server
    finally:
        server.kill()
