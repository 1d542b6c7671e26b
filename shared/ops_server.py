"""A tiny HTTP server for services without a web app: /metrics, /healthz, /readyz.

Runs in a daemon thread beside the service's main loop; Prometheus scrapes `/metrics`,
orchestrators probe `/healthz` (the process's essential threads live: restart it when not)
and `/readyz` (it can do its work now: send it work, or wait).
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

from shared.errors import StorageUnavailable
from shared.storage import ObjectStore

log = logging.getLogger(__name__)

# Returns (ready, details): details name each dependency and its state.
ReadinessCheck = Callable[[], tuple[bool, dict[str, str]]]
# Returns (alive, details): details name each essential thread and its state.
LivenessCheck = Callable[[], tuple[bool, dict[str, str]]]


def _always_alive() -> tuple[bool, dict[str, str]]:
    return True, {}


def threads_alive(threads: dict[str, threading.Thread]) -> LivenessCheck:
    """A liveness check that fails once any of `threads` (by name) has ended; one not yet started is "starting"."""

    def state(thread: threading.Thread) -> str:
        if thread.is_alive():
            return "alive"
        return "starting" if thread.ident is None else "dead"

    def check() -> tuple[bool, dict[str, str]]:
        states = {name: state(thread) for name, thread in threads.items()}
        return all(value != "dead" for value in states.values()), states

    return check


def _checked(check: Callable[[], tuple[bool, dict[str, str]]]) -> tuple[bool, dict[str, str]]:
    """Run a probe's check; one that raises answers "no" with the error, not a dropped request."""
    try:
        return check()
    except Exception as error:  # a probe must always get an answer
        log.exception("a health check raised")
        return False, {"check": f"{type(error).__name__}: {error}"}


def storage_state(store: ObjectStore) -> str:
    """ "ok", or why the store cannot be used now: the storage entry of a /readyz answer."""
    try:
        store.ping()
    except StorageUnavailable as error:
        return str(error)
    return "ok"


def start_ops_server(
    host: str, port: int, readiness: ReadinessCheck, *, liveness: LivenessCheck | None = None
) -> ThreadingHTTPServer:
    """Serve the operations endpoints on `host:port` in a daemon thread; return the server.

    `/healthz` answers 503 when `liveness` says a thread the process cannot work without has
    died (a dependency being down is readiness, not liveness); without it, 200 while serving.
    """
    alive_check = liveness or _always_alive

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path == "/metrics":
                self._send(200, generate_latest(REGISTRY), CONTENT_TYPE_LATEST)
            elif self.path == "/healthz":
                alive, details = _checked(alive_check)
                self._send_json(200 if alive else 503, {"status": "ok" if alive else "dead", "checks": details})
            elif self.path == "/readyz":
                ready, details = _checked(readiness)
                self._send_json(200 if ready else 503, {"ready": ready, "checks": details})
            else:
                self._send_json(404, {"error": {"code": "not_found", "message": f"no route {self.path}"}})

        def _send_json(self, status: int, document: dict) -> None:
            self._send(status, json.dumps(document).encode(), "application/json")

        def _send(self, status: int, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002 (http.server's name)
            log.debug(format, *args)

    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="ops-server", daemon=True).start()
    return server
