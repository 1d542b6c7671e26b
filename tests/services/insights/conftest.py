"""Fixtures of the insights tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from shared.settings import Settings
from shared.storage import ObjectStore, create_store
from tests.support.system import RunningSystem, system_env


@pytest.fixture
def store(s3_settings: Settings) -> ObjectStore:
    """A store on the real S3 endpoint, with buckets of its own for this test."""
    return create_store(s3_settings)


@pytest.fixture
def system(s3_settings: Settings, output_dir: Path, request: pytest.FixtureRequest) -> Iterator[RunningSystem]:
    """Services started as real processes on the test's broker namespace and store; stopped after."""
    log_dir = output_dir / "logs" / request.node.name
    log_dir.mkdir(parents=True, exist_ok=True)
    running = RunningSystem(system_env(s3_settings), log_dir)
    try:
        yield running
    finally:
        running.stop()
