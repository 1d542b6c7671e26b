"""The insights service: keeps the dataset snapshot up to date, watches the input drift of
recent predictions (drift.py) and sweeps expired predictions out of the store (retention.py),
each in a thread of its own, with /healthz and /readyz."""

from __future__ import annotations

import argparse
import logging
import signal
import threading
import time

import numpy as np

from services.insights.consumer import InsightsConsumer
from services.insights.drift import ReferenceLoader
from services.insights.drift_consumer import DriftConsumer, DriftMonitor, write_records
from services.insights.retention import RetentionSweeper
from services.insights.snapshots import SnapshotBuilder
from shared.errors import SkinLesionError
from shared.images import DecodeBudget
from shared.ops_server import start_ops_server, storage_state, threads_alive
from shared.retention import RetentionPolicy
from shared.serving import registry
from shared.settings import Settings
from shared.storage import ObjectStore, create_store

log = logging.getLogger("services.insights")


def serve(_args: argparse.Namespace, settings: Settings) -> int:
    """Run until SIGTERM or SIGINT (exit 0); exit 2 on a bad configuration.

    The broker or the store being away is waited out, never a reason to exit. Each loop runs in
    its own thread, which /healthz reports: should one ever die, the process stays up answering
    503 there, for the supervisor to restart it.
    """
    try:
        store = create_store(settings)
    except (SkinLesionError, ValueError, OSError) as error:
        log.error("cannot start: %s", error)
        return 2
    builder = SnapshotBuilder(
        store,
        max_bytes=settings.max_upload_bytes,
        max_pixels=settings.max_image_pixels,
        budget=DecodeBudget(settings.max_decoded_bytes_per_process),
    )
    consumer = InsightsConsumer(settings, builder)
    loop = threading.Thread(target=consumer.run, name="insights-consumer", daemon=True)
    sweeper = RetentionSweeper(
        store, RetentionPolicy.from_settings(settings), settings.retention_sweep_interval_s, consumer.stopping
    )
    sweep_loop = threading.Thread(target=sweeper.run, name="retention-sweep", daemon=True)
    monitor = DriftMonitor(drift_references(store))
    drift = DriftConsumer(settings, monitor, consumer.stopping)
    drift_loop = threading.Thread(target=drift.run, name="drift-consumer", daemon=True)
    record_loop = threading.Thread(
        target=write_records, args=(monitor, store, consumer.stopping), name="drift-record", daemon=True
    )
    loops = {"consumer": loop, "retention_sweep": sweep_loop, "drift_consumer": drift_loop, "drift_record": record_loop}

    def readiness() -> tuple[bool, dict[str, str]]:
        checks = {
            "broker": "ok" if consumer.connected.is_set() and drift.connected.is_set() else "disconnected",
            "storage": storage_state(store),
        }
        return all(state == "ok" for state in checks.values()), checks

    try:
        start_ops_server(
            settings.http_host,
            settings.insights_metrics_port,
            readiness,
            liveness=threads_alive(loops),
        )
    except OSError as error:
        log.error("cannot serve /metrics on port %d: %s", settings.insights_metrics_port, error)
        return 2

    def stop(signum: int, _frame: object) -> None:
        log.info("received %s; stopping", signal.Signals(signum).name)
        consumer.stopping.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    for thread in loops.values():
        thread.start()
    # Sleep, not Event.wait: the handler that sets the event must not find its lock held here.
    while not consumer.stopping.is_set():
        time.sleep(0.5)
    loop.join(timeout=60)
    for thread in (sweep_loop, drift_loop, record_loop):
        thread.join(timeout=30)
    log.info("stopped")
    return 0


def drift_references(store: ObjectStore) -> ReferenceLoader:
    """Each version's drift reference: the projection of its validation images (None: none)."""

    def load(version: str) -> np.ndarray | None:
        domain = registry.load_domain_model(store, version)
        return None if domain is None else domain.reference_projection

    return load
