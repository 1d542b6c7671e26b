"""The gateway in-process (Flask's test client), its broker client on the real RabbitMQ."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from flask import Flask

from services.gateway.app import create_app
from shared.settings import Settings
from shared.storage import ObjectStore, create_store
from tests.support.broker import CONNECT_TIMEOUT_S, connected_client


@contextmanager
def in_process_gateway(settings: Settings, store: ObjectStore | None = None) -> Iterator[Flask]:
    """The gateway app for `settings` on `store` (by default the settings' own), its broker client
    connected before it is handed over and stopped on the way out; `.test_client()` talks to it."""
    with connected_client(settings) as client:
        assert client.connected.wait(CONNECT_TIMEOUT_S)
        yield create_app(settings, store=create_store(settings) if store is None else store, broker_client=client)
