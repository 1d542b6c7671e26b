"""The worker service: loads the production model (waiting out a store that is not there yet),
consumes prediction jobs until stopped, and answers /healthz and /readyz from the first second;
and the replay of dead-lettered jobs (`python -m services.worker replay-dead-letters`)."""

from __future__ import annotations

import argparse
import json
import logging
import signal
import threading
import time

from services.worker.consumer import PredictionConsumer
from services.worker.dead_letters import replay
from services.worker.model_holder import ModelHolder
from shared.backoff import Backoff
from shared.errors import SkinLesionError
from shared.messaging.topology import Topology
from shared.ops_server import start_ops_server, storage_state
from shared.serving import registry
from shared.settings import Settings
from shared.storage import ObjectStore, create_store

log = logging.getLogger("services.worker")

# /healthz fails when the consume loop has not turned for this long: a stuck loop cannot
# recover by itself, and a restart by the supervisor can. Its waits are all far shorter.
STALLED_AFTER_S = 120.0
START_RETRY_MAX_DELAY_S = 10.0


class Worker:
    """One worker process: loads the model (waiting out a store that is not there yet), then
    consumes until stopped. Its ops server answers from the first second."""

    def __init__(self, settings: Settings, store: ObjectStore) -> None:
        self.settings = settings
        self.store = store
        self.stopping = threading.Event()
        self.consumer: PredictionConsumer | None = None
        self.model_status = "loading"
        self.started = time.monotonic()

    def readiness(self) -> tuple[bool, dict[str, str]]:
        if self.consumer is None:
            return False, {"broker": "not started", "model": self.model_status}
        broker = "ok" if self.consumer.connected.is_set() else "disconnected"
        storage = storage_state(self.store)
        checks = {"broker": broker, "storage": storage, "model": self.consumer.models.current.version}
        if self.consumer.models.refused:
            # Still ready: the version it serves is sound; the refused one is for operators to see.
            checks["refused_model"] = self.consumer.models.refused
        return broker == "ok" and storage == "ok", checks

    def liveness(self) -> tuple[bool, dict[str, str]]:
        last_tick = self.consumer.last_tick if self.consumer is not None else self.started
        idle_s = time.monotonic() - last_tick
        return idle_s < STALLED_AFTER_S, {"consume_loop": f"last turned {idle_s:.0f}s ago"}

    def stop(self, signum: int, _frame: object) -> None:
        log.info("received %s; finishing the batch in hand", signal.Signals(signum).name)
        self.stopping.set()

    def run(self) -> None:
        models = self._load_models()
        if models is None:
            return
        models.mark_serving()
        self.consumer = PredictionConsumer(self.settings, self.store, models, stopping=self.stopping)
        log.info("worker serving model %s", models.current.version)
        self.consumer.run()

    def _load_models(self) -> ModelHolder | None:
        """Seed the store if empty and load production; retry with backoff until it works."""
        backoff = Backoff(1.0, START_RETRY_MAX_DELAY_S)
        while not self.stopping.is_set():
            try:
                seeded = registry.seed_from_directory(self.store, self.settings.models_dir)
                if seeded:
                    log.info("seeded the empty store with shipped model %s", seeded)
                return ModelHolder(self.store, threads=self.settings.inference_threads)
            except SkinLesionError as error:
                self.model_status = f"loading: {error}"
                delay_s = backoff.next()
                log.warning("cannot load the production model yet (%s); retrying in %.1fs", error, delay_s)
                self.stopping.wait(delay_s)
        return None


def serve(_args: argparse.Namespace, settings: Settings) -> int:
    """Run one worker until SIGTERM or SIGINT; the broker or the store away is waited out."""
    worker = Worker(settings, create_store(settings))
    start_ops_server(settings.http_host, settings.worker_metrics_port, worker.readiness, liveness=worker.liveness)
    signal.signal(signal.SIGTERM, worker.stop)
    signal.signal(signal.SIGINT, worker.stop)
    worker.run()
    return 0


def replay_dead_letters(_args: argparse.Namespace, settings: Settings) -> int:
    """Move every dead prediction job back to the queue; print the counts as JSON."""
    topology = Topology.from_settings(settings)
    counts = replay(settings.amqp_url, create_store(settings), topology, ca_file=settings.amqp_ca_file)
    print(json.dumps(counts))
    return 0
