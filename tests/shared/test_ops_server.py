"""The operations server over real HTTP: /healthz follows the liveness check, /readyz readiness."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator

import pytest
import requests

from shared.ops_server import start_ops_server, threads_alive
from tests.support.network import free_port

Check = Callable[[], tuple[bool, dict[str, str]]]


@pytest.fixture
def serve() -> Iterator[Callable[..., str]]:
    """Start an ops server with the given checks; return its base URL; shut it down after."""
    servers = []

    def start(readiness: Check, **kwargs: Check | None) -> str:
        port = free_port()
        servers.append(start_ops_server("127.0.0.1", port, readiness, **kwargs))
        return f"http://127.0.0.1:{port}"

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def ready() -> tuple[bool, dict[str, str]]:
    return True, {"broker": "ok"}


def test_without_a_liveness_check_healthz_answers_200(serve: Callable[..., str]) -> None:
    response = requests.get(f"{serve(ready)}/healthz", timeout=5)
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "checks": {}}


def test_healthz_follows_the_liveness_check_and_names_what_died(serve: Callable[..., str]) -> None:
    alive = {"value": True}

    def liveness() -> tuple[bool, dict[str, str]]:
        return alive["value"], {"main-loop": "alive" if alive["value"] else "dead"}

    base = serve(ready, liveness=liveness)
    first = requests.get(f"{base}/healthz", timeout=5)
    assert first.status_code == 200 and first.json()["checks"] == {"main-loop": "alive"}
    alive["value"] = False
    second = requests.get(f"{base}/healthz", timeout=5)
    assert second.status_code == 503
    assert second.json() == {"status": "dead", "checks": {"main-loop": "dead"}}
    assert requests.get(f"{base}/readyz", timeout=5).status_code == 200, "liveness does not change readiness"


def test_readyz_answers_503_with_the_details_when_not_ready(serve: Callable[..., str]) -> None:
    base = serve(lambda: (False, {"storage": "cannot reach S3 endpoint"}))
    response = requests.get(f"{base}/readyz", timeout=5)
    assert response.status_code == 503
    assert response.json() == {"ready": False, "checks": {"storage": "cannot reach S3 endpoint"}}
    assert requests.get(f"{base}/healthz", timeout=5).status_code == 200, "a dependency down is not death"


def test_a_check_that_raises_answers_503_instead_of_dropping_the_probe(serve: Callable[..., str]) -> None:
    def broken() -> tuple[bool, dict[str, str]]:
        raise RuntimeError("surprise")

    base = serve(broken, liveness=broken)
    for path in ("/healthz", "/readyz"):
        response = requests.get(f"{base}{path}", timeout=5)
        assert response.status_code == 503
        assert "surprise" in response.json()["checks"]["check"]


def test_threads_alive_fails_once_a_named_thread_has_ended() -> None:
    release = threading.Event()
    thread = threading.Thread(target=release.wait, args=(10,), daemon=True)
    check = threads_alive({"consumer": thread})
    assert check() == (True, {"consumer": "starting"}), "not yet started is not dead"
    thread.start()
    assert check() == (True, {"consumer": "alive"})
    release.set()
    thread.join(timeout=10)
    assert check() == (False, {"consumer": "dead"})
