"""The trainer's long-running and operational commands: `serve` and `import-dataset`."""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import os
import re
import signal
import threading
import time
from functools import partial
from pathlib import Path

from shared import dataset
from shared.errors import BadInput, BrokerUnavailable, SkinLesionError, StorageUnavailable
from shared.messaging.rabbitmq import prepare_topology, publish_event
from shared.messaging.schemas import Event
from shared.messaging.topology import EVENT_DATASET_CHANGED, Topology
from shared.ops_server import start_ops_server, threads_alive
from shared.serving import registry
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
    from services.trainer.imports import DatasetImporter
    from services.trainer.service import ServiceStopping, TrainerService

    try:
        store = create_store(settings)
    except (SkinLesionError, ValueError) as error:
        log.error("cannot start: %s", error)
        return 2
    service = TrainerService(settings, store)
    # Staged dataset uploads, imported in a thread (and connection) of its own: a run never holds them back.
    importer = DatasetImporter(settings, store, service.stopping)
    imports = threading.Thread(target=importer.run, name="dataset-import", daemon=True)
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
        imports.start()  # once the store is prepared (collections moved, DATA_DIR imported)
        service.run()

    def readiness() -> tuple[bool, dict[str, str]]:
        ready, checks = service.readiness()
        checks["dataset_imports"] = "ok" if importer.connected.is_set() else "disconnected"
        return ready, checks

    loop = threading.Thread(target=work, name="trainer-loop", daemon=True)
    liveness = threads_alive({"trainer-loop": loop, "dataset-import": imports})
    try:
        start_ops_server(settings.http_host, settings.trainer_metrics_port, readiness, liveness=liveness)
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
    if imports.is_alive():
        imports.join(timeout=10)
    return exit_code


def prepare_store(settings: Settings, store: ObjectStore, stopping: threading.Event) -> None:
    """Seed the model registry, move images of the layout before collections into theirs, and
    import DATA_DIR (and EXTERNAL_DATA_DIR, held out whole), waiting for the store and broker
    while they are away."""
    from services.trainer.service import retry_until_done

    retry = partial(retry_until_done, stopping=stopping, errors=(StorageUnavailable, BrokerUnavailable))
    retry("seed the model registry", partial(registry.seed_from_directory, store, settings.models_dir))
    folders = startup_folders(settings)
    moved = retry("move images into collections", partial(migrate, settings, store))
    if moved:
        log.info("moved %d images of the layout before collections into collections", moved)
    for root, collection, external in folders:
        counts = retry(f"import {root}", partial(add_folder, settings, store, root, collection, external))
        log.info("imported %s into collection %s: %s", root, collection, counts)
        if counts["added"]:
            # Retried on its own: a repeated import adds nothing, so would announce nothing.
            retry("announce the import", partial(announce_import, settings, collection, counts["added"]))


def migrate(settings: Settings, store: ObjectStore) -> int:
    external = settings.external_data_dir
    return dataset.migrate_legacy_layout(
        store,
        data_collection=_configured_name(settings.data_collection, settings.data_dir),
        external_collection=_configured_name(settings.external_data_collection, external) if external else None,
        holdout_fraction=settings.holdout_fraction,
    )


def _configured_name(configured: str, folder: Path) -> str:
    """DATA_COLLECTION (or EXTERNAL_DATA_COLLECTION) when set, else the folder's name; checked."""
    return dataset.check_collection_name(configured or collection_name_for(folder))


def collection_name_for(folder: Path) -> str:
    """A folder's name as a collection name: `../shared/datasets/ham10000` -> `ham10000`."""
    return re.sub(r"[^a-z0-9_-]+", "-", folder.resolve().name.lower()).strip("-_")[:40] or "data"


def startup_folders(settings: Settings) -> list[tuple[Path, str, bool]]:
    """(folder, collection, external) to import at start: DATA_DIR, and EXTERNAL_DATA_DIR held out whole."""
    folders: list[tuple[Path, str, bool]] = []
    if settings.data_dir.is_dir():
        folders.append((settings.data_dir, _configured_name(settings.data_collection, settings.data_dir), False))
    external = settings.external_data_dir
    if external is not None:
        if external.is_dir():
            folders.append((external, _configured_name(settings.external_data_collection, external), True))
        else:
            log.warning("EXTERNAL_DATA_DIR=%s is not a folder; no external collection is imported", external)
    return folders


def add_import_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data",
        type=Path,
        help="folder of {train,test}/{benign,malignant}/ (its own parts) or of {benign,malignant}/"
        " (held out by patient or image hash); default DATA_DIR",
    )
    parser.add_argument(
        "--collection",
        help="collection name (a-z, 0-9, '_', '-'; default: the folder's name)",
    )
    parser.add_argument(
        "--external",
        action="store_true",
        help="an external collection: never trained on, held out whole; the gate judges candidates on it",
    )


def run_import(args: argparse.Namespace, settings: Settings) -> int:
    """Load a labelled folder into a collection of the store; a second import adds nothing."""
    root = args.data or settings.data_dir
    if not root.is_dir():
        log.error("no dataset folder at %s", root)
        return 2
    if not any(True for _ in dataset.iter_folder(root)):
        log.error("%s has no images in {train,test}/{benign,malignant}/ nor in {benign,malignant}/", root)
        return 2
    started = time.monotonic()
    try:
        collection = dataset.check_collection_name(args.collection or collection_name_for(root))
        counts = import_folder(settings, create_store(settings), root, collection, args.external)
    except BadInput as error:
        log.error("%s", error)
        return 2
    print(
        json.dumps(
            {
                "data": str(root),
                "collection": collection,
                "external": args.external,
                **counts,
                "seconds": round(time.monotonic() - started, 1),
            }
        )
    )
    return 0


def import_folder(
    settings: Settings, store: ObjectStore, root: Path, collection: str, external: bool = False
) -> dict[str, int]:
    """Add every image of a folder (see `add_folder`); announce what is new."""
    counts = add_folder(settings, store, root, collection, external)
    if counts["added"]:
        announce_import(settings, collection, counts["added"])
    return counts


def add_folder(
    settings: Settings, store: ObjectStore, root: Path, collection: str, external: bool = False
) -> dict[str, int]:
    """Add every image the store lacks into `collection`: a `{train,test}/{benign,malignant}/`
    folder keeps its parts (an external collection's all go to test), a `{benign,malignant}/`
    folder's are assigned by patient (from its manifest.csv) or image hash.

    Raises BadInput for a manifest.csv without a `path` column, before anything is stored.
    """
    manifest = root / "manifest.csv"
    patients = dataset.read_manifest_patients(manifest) if manifest.is_file() else {}
    record = dataset.open_collection(store, collection, external=external, holdout_fraction=settings.holdout_fraction)
    known = dataset.known_hashes(store)
    counts = {"added": 0, "duplicate": 0, "rejected": 0}
    # iter_folder yields part by part; each part's files are read lazily, as add_images stores them.
    for part, images in itertools.groupby(dataset.iter_folder(root), key=lambda image: image[0]):
        files = (
            dataset.LabelledFile(path.name, label, path.read_bytes(), patients.get(path.relative_to(root).as_posix()))
            for _, label, path in images
        )
        outcomes = dataset.add_images(
            store,
            record,
            files,
            part=dataset.TEST_PART if record.external else part,
            known=known,
            max_bytes=settings.max_upload_bytes,
            max_pixels=settings.max_image_pixels,
        )
        for outcome in outcomes:
            counts[outcome.status] += 1
            if outcome.status == "rejected":
                log.warning("rejected %s: %s", outcome.filename, outcome.reason)
    return counts


def announce_import(settings: Settings, collection: str, added: int) -> None:
    """Tell insights (and anyone listening) that the dataset changed."""
    event = Event(
        name=EVENT_DATASET_CHANGED,
        event_id=f"import-{time.time_ns()}",
        occurred_at=time.time(),
        data={"collection": collection, "added": added},
    )
    topology = Topology.from_settings(settings)
    # The first service up may be this one: the exchange must exist before a publish to it.
    prepare_topology(settings.amqp_url, topology, timeout_s=10, ca_file=settings.amqp_ca_file)
    publish_event(
        settings.amqp_url,
        topology.events_exchange,
        event,
        routing_key=EVENT_DATASET_CHANGED,
        ca_file=settings.amqp_ca_file,
    )
