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
from shared.storage import ObjectStore, create_store

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
    """Seed the model registry and import DATA_DIR, waiting for the store and broker while they are away."""
    from services.trainer.service import retry_until_done

    retry = partial(retry_until_done, stopping=stopping, errors=(StorageUnavailable, BrokerUnavailable))
    retry("seed the model registry", partial(registry.seed_from_directory, store, settings.models_dir))
    if not settings.data_dir.is_dir():
        return
    root = settings.data_dir
    counts = retry("import the dataset", partial(add_folder, settings, store, root))
    log.info("imported %s: %s", root, counts)
    if counts["added"]:
        # Retried on its own: a repeated import adds nothing, so would announce nothing.
        retry("announce the import", partial(announce_import, settings, root, counts["added"]))


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
    counts = add_folder(settings, store, root)
    if counts["added"]:
        announce_import(settings, root, counts["added"])
    return counts


def add_folder(settings: Settings, store: ObjectStore, root: Path) -> dict[str, int]:
    """Add every image of a `{train,test}/{benign,malignant}/` folder that the store lacks."""
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
