"""Entry point: `python -m services.worker` runs one inference worker."""

from __future__ import annotations

import logging
import signal
import sys

from services.worker.consumer import PredictionConsumer
from services.worker.models import ModelHolder
from shared.errors import SkinLesionError
from shared.logs import configure_logging
from shared.model import registry
from shared.ops_server import start_ops_server
from shared.settings import Settings
from shared.storage import create_store

log = logging.getLogger("services.worker")


def main() -> int:
    settings = Settings.from_env()
    configure_logging(settings.log_level, "worker")
    try:
        store = create_store(settings)
        seeded = registry.seed_from_directory(store, settings.models_dir)
        if seeded:
            log.info("seeded the empty store with shipped model %s", seeded)
        models = ModelHolder(store, threads=settings.inference_threads)
    except SkinLesionError as error:
        log.error("cannot start: %s", error)
        return 2
    models.mark_serving()
    consumer = PredictionConsumer(settings, store, models)

    def readiness() -> tuple[bool, dict[str, str]]:
        broker = "ok" if consumer.connected.is_set() else "disconnected"
        return broker == "ok", {"broker": broker, "model": models.current.version}

    start_ops_server(settings.http_host, settings.worker_metrics_port, readiness)

    def stop(signum: int, _frame: object) -> None:
        log.info("received %s; finishing the batch in hand", signal.Signals(signum).name)
        consumer.stopping.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    log.info("worker serving model %s", models.current.version)
    consumer.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
