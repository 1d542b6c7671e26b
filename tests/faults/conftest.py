"""Servers a fault test owns: it may kill and restart them without disturbing any other test."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support.rabbitmq_node import RabbitNode
from tests.support.seaweedfs import SeaweedS3
from tests.support.system import RunningSystem, system_env


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


@pytest.fixture
def system_on_broker(
    own_s3: SeaweedS3, models_dir: Path, output_dir: Path, request: pytest.FixtureRequest
) -> Iterator[Callable[[str], RunningSystem]]:
    """Makes the system (no service started yet) for a broker URL and this test's own S3 server;
    stops whatever it started at teardown."""
    systems: list[RunningSystem] = []

    def make(amqp_url: str) -> RunningSystem:
        settings = own_s3.settings(amqp_url=amqp_url)
        log_dir = output_dir / "logs" / request.node.name
        log_dir.mkdir(parents=True, exist_ok=True)
        # The load stands for many clients from one address: no per-client quota on the backlog.
        env = system_env(settings, models_dir, predict_timeout_s=5, max_queued_jobs_per_client=100_000)
        systems.append(RunningSystem(env, log_dir))
        return systems[-1]

    yield make
    for system in systems:
        system.stop()
