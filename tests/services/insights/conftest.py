"""Fixtures of the insights tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from shared.settings import Settings
from shared.storage import ObjectStore, create_store
from tests.support.system import RunningSystem, running_system, system_env


@pytest.fixture
def store(s3_settings: Settings) -> ObjectStore:
    """A store on the real S3 endpoint, with buckets of its own for this test."""
    return create_store(s3_settings)


@pytest.fixture
def system(s3_settings: Settings, output_dir: Path, request: pytest.FixtureRequest) -> Iterator[RunningSystem]:
    """Services started as real processes on the test's broker namespace and store; stopped after."""
    with running_system(system_env(s3_settings), output_dir / "logs" / request.node.name) as running:
        yield running
