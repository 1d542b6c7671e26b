"""A tiny HTTP server for services without a web app: /metrics, /healthz, /readyz.

Runs in a daemon thread beside the service's main loop; Prometheus scrapes `/metrics`,
orchestrators probe `/healthz` (the process runs) and `/readyz` (it can do its work).
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

log = logging.getLogger(__name__)

# Returns (ready, details): details name each dependency and its state.
ReadinessCheck = Callable[[], tuple[bool, dict[str, str]]]


def start_ops_server(host: str, port: int, readiness: ReadinessCheck) -> ThreadingHTTPServer:
    """Serve the operations endpoints on `host:port` in a daemon thread; return the server."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path == "/metrics":
                self._send(200, generate_latest(REGISTRY), CONTENT_TYPE_LATEST)
            elif self.path == "/healthz":
                self._send_json(200, {"status": "ok"})
            elif self.path == "/readyz":
                ready, details = readiness()
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
