"""The trainer's long-running and operational commands: `serve` and `import-dataset`."""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import threading
import time
from functools import partial
from pathlib import Path

from shared import dataset
from shared.errors import BrokerUnavailable, SkinLesionError, StorageUnavailable
from shared.logs import configure_logging
from shared.messaging.rabbitmq import CONNECTION_ERRORS, close_quietly, connect, publish_event
from shared.messaging.schemas import Event
from shared.messaging.topology import EVENT_DATASET_CHANGED, Topology
from shared.model import registry
from shared.ops_server import start_ops_server, threads_alive
from shared.settings import Settings
from shared.storage import ObjectStore, create_store, layout

log = logging.getLogger(__name__)


def add_serve_arguments(_parser: argparse.ArgumentParser) -> None:
    """`serve` takes no arguments: its settings come from the environment."""


def run_serve(_args: argparse.Namespace, settings: Settings) -> int:
    """Consume retrain requests until SIGTERM; exit 2 only on a bad configuration.

    The store and the broker may be away at start-up, or go away later: the service waits for
    them. Its work runs in one thread, which /healthz reports; the main thread takes signals.
    """
    from services.trainer.service import ServiceStopping, TrainerService

    configure_logging(settings.log_level, "trainer")
    try:
        store = create_store(settings)
    except (SkinLesionError, ValueError) as error:
        log.error("cannot start: %s", error)
        return 2
    service = TrainerService(settings, store)
    exit_code = 0

    def work() -> None:
        nonlocal exit_code
        try:
            prepare_store(settings, store, service.stopping)
        except ServiceStopping:
            return
        except SkinLesionError as error:  # what waiting cannot mend: a missing shipped model
            log.error("cannot start: %s", error)
            exit_code = 2
            service.stopping.set()
            return
        service.run()

    loop = threading.Thread(target=work, name="trainer-loop", daemon=True)
    liveness = threads_alive({"trainer-loop": loop})
    try:
        start_ops_server(settings.http_host, settings.trainer_metrics_port, service.readiness, liveness=liveness)
    except OSError as error:
        log.error("cannot serve /metrics on port %d: %s", settings.trainer_metrics_port, error)
        return 2

    def stop(signum: int, _frame: object) -> None:
        if service.busy.is_set():
            # The job record says "running": the next start runs it again, same version name.
            log.warning("%s during a run; exiting now, the job resumes at the next start", signal.Signals(signum).name)
            os._exit(128 + signum)
        service.stopping.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    loop.start()
    # Sleep, not Event.wait: a handler that sets the event must not find its lock held here.
    # A loop thread that died leaves the process up with /healthz failing, for the supervisor.
    while not service.stopping.is_set():
        time.sleep(0.5)
    loop.join(timeout=30)
    return exit_code


def prepare_store(settings: Settings, store: ObjectStore, stopping: threading.Event) -> None:
    """Seed the model registry and import DATA_DIR (and EXTERNAL_DATA_DIR into `external`),
    waiting for the store and broker while they are away."""
    from services.trainer.service import retry_until_done

    retry = partial(retry_until_done, stopping=stopping, errors=(StorageUnavailable, BrokerUnavailable))
    retry("seed the model registry", partial(registry.seed_from_directory, store, settings.models_dir))
    for root, split in startup_folders(settings):
        counts = retry(f"import {root}", partial(add_folder, settings, store, root, split))
        log.info("imported %s%s: %s", root, f" into {split}" if split else "", counts)
        if counts["added"]:
            # Retried on its own: a repeated import adds nothing, so would announce nothing.
            retry("announce the import", partial(announce_import, settings, root, counts["added"]))


def startup_folders(settings: Settings) -> list[tuple[Path, str | None]]:
    """(folder, split) to import at start: DATA_DIR by its own layout, EXTERNAL_DATA_DIR into `external`."""
    folders: list[tuple[Path, str | None]] = []
    if settings.data_dir.is_dir():
        folders.append((settings.data_dir, None))
    external = settings.external_data_dir
    if external is not None:
        if external.is_dir():
            folders.append((external, dataset.EXTERNAL_SPLIT))
        else:
            log.warning("EXTERNAL_DATA_DIR=%s is not a folder; no external split is imported", external)
    return folders


def add_import_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data",
        type=Path,
        help="folder of {train,test}/{benign,malignant}/ (default DATA_DIR); with --split, of {benign,malignant}/",
    )
    parser.add_argument(
        "--split",
        choices=dataset.SPLITS,
        help="store every image of DATA's benign/ and malignant/ in this split; `external` (another collection)"
        " is never trained on, and the gate compares candidate and production on it as well as on test",
    )


def run_import(args: argparse.Namespace, settings: Settings) -> int:
    """Load a labelled folder into the store's datasets/; a second import adds nothing."""
    root = args.data or settings.data_dir
    if not root.is_dir():
        log.error("no dataset folder at %s", root)
        return 2
    if args.split and not any((root / label).is_dir() for label in layout.LABELS):
        log.error("--split %s takes a folder with benign/ and malignant/ at its root; %s has neither", args.split, root)
        return 2
    started = time.monotonic()
    counts = import_folder(settings, create_store(settings), root, args.split)
    where = {"split": args.split} if args.split else {}
    print(json.dumps({"data": str(root), **where, **counts, "seconds": round(time.monotonic() - started, 1)}))
    return 0


def import_folder(settings: Settings, store: ObjectStore, root: Path, split: str | None = None) -> dict[str, int]:
    """Add every image of a folder (see `add_folder`); announce what is new."""
    counts = add_folder(settings, store, root, split)
    if counts["added"]:
        announce_import(settings, root, counts["added"])
    return counts


def add_folder(settings: Settings, store: ObjectStore, root: Path, split: str | None = None) -> dict[str, int]:
    """Add every image the store lacks: of a `{train,test}/{benign,malignant}/` folder, or with
    `split`, of a `{benign,malignant}/` folder into that split."""
    known = dataset.known_hashes(store)
    counts = {"added": 0, "duplicate": 0, "rejected": 0}
    for image_split, label, path in dataset.iter_folder(root, split):
        outcome = dataset.add_image(
            store,
            path.read_bytes(),
            split=image_split,
            label=label,
            filename=path.name,
            known=known,
            max_bytes=settings.max_upload_bytes,
            max_pixels=settings.max_image_pixels,
        )
        counts[outcome.status] += 1
        if outcome.status == "rejected":
            log.warning("rejected %s: %s", path, outcome.reason)
    return counts


def announce_import(settings: Settings, root: Path, added: int) -> None:
    """Tell insights (and anyone listening) that the dataset changed."""
    event = Event(
        name=EVENT_DATASET_CHANGED,
        event_id=f"import-{time.time_ns()}",
        occurred_at=time.time(),
        data={"source": str(root), "added": added},
    )
    topology = Topology.from_settings(settings)
    # The first service up may be this one: the exchange must exist before a publish to it.
    connection = connect(settings.amqp_url, timeout_s=10)
    try:
        topology.declare(connection.channel())
    except CONNECTION_ERRORS as error:
        raise BrokerUnavailable(f"cannot declare the broker topology: {error!r}") from error
    finally:
        close_quietly(connection)
    publish_event(settings.amqp_url, topology.events_exchange, event, routing_key=EVENT_DATASET_CHANGED)
