"""Fixtures of the insights tests."""

from __future__ import annotations

import pytest

from shared.settings import Settings
from shared.storage import ObjectStore, create_store


@pytest.fixture
def store(s3_settings: Settings) -> ObjectStore:
    """A store on the real S3 endpoint, with buckets of its own for this test."""
    return create_store(s3_settings)
