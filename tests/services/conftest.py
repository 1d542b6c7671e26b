"""Fixtures of the service tests."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack

import pytest
from flask import Flask

from shared.settings import Settings
from shared.storage import ObjectStore
from tests.support.gateway import in_process_gateway


@pytest.fixture
def gateway(namespace: str) -> Iterator[Callable[..., Flask]]:
    """Makes in-process gateways: `gateway(settings, store=None)` is the app (`.test_client()` talks
    to it), its broker client connected; every one made is stopped at teardown, before the
    test's broker namespace is deleted."""
    with ExitStack() as stack:

        def make(settings: Settings, store: ObjectStore | None = None) -> Flask:
            return stack.enter_context(in_process_gateway(settings, store))

        yield make
