"""The trainer's long-running and operational commands: `serve` and `import-dataset`."""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import time
from pathlib import Path

from shared import dataset
from shared.errors import SkinLesionError
from shared.logs import configure_logging
from shared.messaging.rabbitmq import publish_event
from shared.messaging.schemas import Event
from shared.messaging.topology import EVENT_DATASET_CHANGED, Topology
from shared.model import registry
from shared.ops_server import start_ops_server
from shared.settings import Settings
from shared.storage import ObjectStore, create_store

log = logging.getLogger(__name__)


def add_serve_arguments(_parser: argparse.ArgumentParser) -> None:
    """`serve` takes no arguments: its settings come from the environment."""


def run_serve(_args: argparse.Namespace, settings: Settings) -> int:
    """Consume retrain requests until SIGTERM."""
    from services.trainer.service import TrainerService

    configure_logging(settings.log_level, "trainer")
    try:
        store = create_store(settings)
        registry.seed_from_directory(store, settings.models_dir)
        if settings.data_dir.is_dir():
            log.info("imported %s: %s", settings.data_dir, import_folder(settings, store, settings.data_dir))
    except SkinLesionError as error:
        log.error("cannot start: %s", error)
        return 2
    service = TrainerService(settings, store)

    def readiness() -> tuple[bool, dict[str, str]]:
        broker = "ok" if service.connected.is_set() else ("training" if service.busy.is_set() else "disconnected")
        return broker in {"ok", "training"}, {"broker": broker}

    start_ops_server(settings.http_host, settings.trainer_metrics_port, readiness)

    def stop(signum: int, _frame: object) -> None:
        if service.busy.is_set():
            # The job record says "running": the next start runs it again, same version name.
            log.warning("%s during a run; exiting now, the job resumes at the next start", signal.Signals(signum).name)
            os._exit(128 + signum)
        service.stopping.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    service.run()
    return 0


def add_import_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", type=Path, help="folder laid out as {train,test}/{benign,malignant}/ (DATA_DIR)")


def run_import(args: argparse.Namespace, settings: Settings) -> int:
    """Load a labelled folder into the store's datasets/; a second import adds nothing."""
    root = args.data or settings.data_dir
    if not root.is_dir():
        log.error("no dataset folder at %s", root)
        return 2
    started = time.monotonic()
    counts = import_folder(settings, create_store(settings), root)
    print(json.dumps({"data": str(root), **counts, "seconds": round(time.monotonic() - started, 1)}))
    return 0


def import_folder(settings: Settings, store: ObjectStore, root: Path) -> dict[str, int]:
    """Add every image of a `{train,test}/{benign,malignant}/` folder; announce what is new."""
    known = dataset.known_hashes(store)
    counts = {"added": 0, "duplicate": 0, "rejected": 0}
    for split, label, path in dataset.iter_folder(root):
        outcome = dataset.add_image(
            store,
            path.read_bytes(),
            split=split,
            label=label,
            filename=path.name,
            known=known,
            max_bytes=settings.max_upload_bytes,
            max_pixels=settings.max_image_pixels,
        )
        counts[outcome.status] += 1
        if outcome.status == "rejected":
            log.warning("rejected %s: %s", path, outcome.reason)
    if counts["added"]:
        event = Event(
            name=EVENT_DATASET_CHANGED,
            event_id=f"import-{time.time_ns()}",
            occurred_at=time.time(),
            data={"source": str(root), "added": counts["added"]},
        )
        topology = Topology.from_settings(settings)
        publish_event(settings.amqp_url, topology.events_exchange, event, routing_key=EVENT_DATASET_CHANGED)
    return counts
