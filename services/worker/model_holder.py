"""The model a worker serves, and the hot swap to a newly promoted version.

A new version is loaded and warmed up beside the old one in a background thread, then
swapped in with one reference assignment: a batch in flight finishes on the model it
started with, and no request waits for a load.
"""

from __future__ import annotations

import logging
import threading

import numpy as np

from shared import metrics
from shared.errors import SkinLesionError, TransientError
from shared.images import MODEL_INPUT_SIZE
from shared.serving import registry
from shared.serving.registry import ArtifactMismatch
from shared.serving.runtime import ServingModel
from shared.storage import ObjectStore

log = logging.getLogger(__name__)


class ModelHolder:
    """Holds the serving model; `current` is always a loaded, warmed-up version."""

    def __init__(self, store: ObjectStore, *, threads: int = 0) -> None:
        self._store = store
        self._threads = threads
        self._lock = threading.Lock()
        self._wanted: str | None = None
        self._loader_running = False
        # The last version refused because a file's bytes differ from its card's record
        # (/readyz says so; the worker keeps serving what it has).
        self.refused: str | None = None
        self.current: ServingModel = self._load(self._production_or_fail())

    def _production_or_fail(self) -> str:
        version = registry.production_version(self._store)
        if version is None:
            raise SkinLesionError("the store has no production model")
        return version

    def _load(self, version: str) -> ServingModel:
        model = registry.load_serving_model(self._store, version, threads=self._threads)
        # Warm-up: the first run allocates buffers and picks kernels; keep that off a request.
        model.predict(np.zeros((1, *MODEL_INPUT_SIZE, 3), np.float32))
        return model

    def _publish(self, model: ServingModel) -> None:
        previous = self.current
        self.current = model
        metrics.MODEL_INFO.labels(previous.version).set(0)
        metrics.MODEL_INFO.labels(model.version).set(1)
        metrics.MODEL_SWAPS.inc()
        self.refused = None  # what was refused is no longer what production wants
        log.info("now serving model %s (was %s)", model.version, previous.version)

    def swap_in_background(self, version: str) -> None:
        """Load `version` in a thread and switch to it; a failed load keeps the old model.

        One loader thread at a time works towards the latest wanted version, so two quick
        promotions cannot finish out of order.
        """
        with self._lock:
            self._wanted = version
            if self._loader_running:
                return
            self._loader_running = True
        threading.Thread(target=self._load_wanted, name="model-loader", daemon=True).start()

    def _load_wanted(self) -> None:
        while True:
            with self._lock:
                version = self._wanted
                if version is None or version == self.current.version:
                    self._loader_running = False
                    return
            try:
                model = self._load(version)
            except SkinLesionError as error:
                if isinstance(error, ArtifactMismatch):
                    self.refused = str(error)
                log.exception("could not load model %s; still serving %s", version, self.current.version)
                with self._lock:
                    if self._wanted == version:
                        self._wanted = None
                continue
            with self._lock:
                if self._wanted == version:
                    self._publish(model)

    def follow_production(self) -> None:
        """Catch up with the alias, e.g. after a reconnect during which events were missed.

        A store that cannot be read now is no reason to stop serving the current model.
        """
        try:
            version = registry.production_version(self._store)
        except TransientError as error:
            log.warning("cannot read the production alias (%s); still serving %s", error, self.current.version)
            return
        if version is not None:
            self.swap_in_background(version)

    def mark_serving(self) -> None:
        metrics.MODEL_INFO.labels(self.current.version).set(1)
