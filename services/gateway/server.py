"""The gateway's server: gunicorn with threads, each request given a thread only once it has
wholly arrived (whole_requests.py), the app built in each process after the fork."""

from __future__ import annotations

import argparse
import ctypes
import os
import tempfile

from gunicorn.app.base import BaseApplication

from services.gateway.whole_requests import WholeRequestWorker
from shared.logs import configure_logging
from shared.settings import Settings


class GatewayServer(BaseApplication):
    """gunicorn with threads: each process keeps one broker connection for its requests."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        super().__init__()

    def load_config(self) -> None:
        settings = self.settings
        self.cfg.set("bind", f"{settings.http_host}:{settings.http_port}")
        self.cfg.set("workers", settings.gateway_processes)
        # gthread, but a request gets a thread only once it has wholly arrived (slow clients).
        WholeRequestWorker.read_timeout_s = settings.client_read_timeout_s
        WholeRequestWorker.max_body_bytes = settings.max_request_bytes
        self.cfg.set("worker_class", WholeRequestWorker)
        self.cfg.set("threads", settings.gateway_threads)
        # A request may legitimately wait predict_timeout_s for its answer.
        self.cfg.set("timeout", int(settings.predict_timeout_s) + 30)
        self.cfg.set("graceful_timeout", int(settings.predict_timeout_s) + 5)
        self.cfg.set("child_exit", _forget_dead_process_metrics)
        # SO_REUSEPORT: when the master is SIGKILLed, its workers notice only later (after their
        # in-flight requests) and keep the listening socket meanwhile; without this the restarted
        # master fails to bind ("Address already in use") until they are gone. The price: a second
        # gateway started by the same user on the same port shares it instead of failing to start.
        self.cfg.set("reuse_port", True)

    def load(self) -> object:
        # Imported here, after the fork, so every process builds its own app and connection.
        from services.gateway.app import create_app

        configure_logging(self.settings.log_level, "gateway")
        return create_app(self.settings)


# glibc's mallopt parameter for the number of malloc arenas.
_M_ARENA_MAX = -8
# glibc gives each thread that allocates while another holds the lock an arena of its own (up to
# 8 per core) and rarely hands their freed memory back: with 64 threads each decoding a 10 MiB
# upload in turn, the gateway kept about twice the memory it needed. Two arenas: 50 clients sending
# 9.4 MiB PNGs peaked at 609-684 MB instead of 1,240 MB, at the same throughput (docs/history/performance-runs.md).
GATEWAY_MALLOC_ARENAS = 2


def _limit_malloc_arenas(arenas: int) -> None:
    """Cap glibc's malloc arenas before gunicorn forks (children inherit it); MALLOC_ARENA_MAX wins if set."""
    if "MALLOC_ARENA_MAX" in os.environ:
        return
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc (musl, macOS): its allocator has no such arenas
        return
    libc.mallopt(_M_ARENA_MAX, arenas)


def _forget_dead_process_metrics(_server: object, worker: object) -> None:
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)  # type: ignore[attr-defined]


def serve(_args: argparse.Namespace, settings: Settings) -> int:
    """Serve until gunicorn's master is stopped (SIGTERM drains the requests in flight)."""
    # Must be set before prometheus_client is imported anywhere: it picks its storage then.
    os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", tempfile.mkdtemp(prefix="slc-gateway-metrics-"))
    _limit_malloc_arenas(GATEWAY_MALLOC_ARENAS)
    print(f"Skin Lesion Classifier gateway on http://{settings.http_host}:{settings.http_port}/", flush=True)
    if not settings.write_token:
        print(
            "No WRITE_TOKEN: writes (uploads, training, promotion, deletion) are accepted from this"
            " gateway's own pages and from clients that are not browsers; other sites' pages get 403.",
            flush=True,
        )
    GatewayServer(settings).run()
    return 0
