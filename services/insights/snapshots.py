"""Incremental recomputation of the insights snapshot.

Per-image statistics depend only on the image's bytes, so they are cached by content hash
in two tiers: this process's memory, and `insights/cache/{sha256}.json` in the store (which
survives restarts and is shared by replacements). A refresh lists the dataset, reads the
statistics it does not hold, computes only the ones nobody has, reads each collection's record
(is it external?) and writes the snapshot: adding 10 images costs 10 decodes, not a pass over
the whole dataset.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from services.insights.statistics import Entry, entries_frame, image_statistics, is_current, summarise
from shared import metrics
from shared.dataset import DatasetImage, iter_images, read_collection
from shared.errors import ObjectNotFound, SkinLesionError
from shared.images import UNLIMITED_DECODE_BUDGET, DecodeBudget
from shared.storage import ObjectStore, layout, put_json

log = logging.getLogger(__name__)

_CACHE_PREFIX = layout.insights_cache("").removesuffix(".json")


class RefreshCancelled(SkinLesionError):
    """Raised when a refresh stops early because the service is shutting down."""


class SnapshotBuilder:
    """Keeps `insights/snapshots/latest.json` up to date with the dataset in `store`.

    Not thread-safe: one refresh at a time (the consumer runs them one after another).
    """

    def __init__(
        self,
        store: ObjectStore,
        *,
        max_bytes: int,
        max_pixels: int,
        budget: DecodeBudget = UNLIMITED_DECODE_BUDGET,
        threads: int = 4,
    ) -> None:
        self.store = store
        self.max_bytes = max_bytes
        self.max_pixels = max_pixels
        # The process's decoded pixels, bounded: a few 40 MP images decoded at once by the pool
        # must not take the service, and with it the retention sweep, past its memory limit.
        self.budget = budget
        # Threads overlap store round trips; decoding releases the GIL in Pillow.
        self.threads = max(1, threads)
        self._entries: dict[str, Entry] = {}

    def refresh(self, stop: threading.Event | None = None) -> dict[str, Any]:
        """Bring the snapshot up to date and return it; `work` in it says what this cost.

        Raises RefreshCancelled when `stop` is set before the work is done (statistics
        computed so far are already cached), and TransientError when the store fails.
        """
        stop = stop or threading.Event()
        started = time.monotonic()
        images = list(iter_images(self.store))
        wanted = {image.sha256 for image in images} - self._entries.keys()
        if wanted:
            self._load_cached(wanted, stop)
        missing = wanted - self._entries.keys()
        keys = {image.sha256: image.key for image in images}
        self._compute({sha256: keys[sha256] for sha256 in sorted(missing)}, stop)
        work = {"computed": len(missing), "cached": len(images) - len(missing), "seconds": 0.0}
        snapshot = summarise(
            entries_frame(images, self._entries),
            external=self._external_collections(images),
            computed_at=time.time(),
            work=work,
        )
        # Everything but the final write: listing, cache reads, decoding, aggregation.
        seconds = time.monotonic() - started
        snapshot["work"]["seconds"] = round(seconds, 3)
        put_json(self.store, layout.INSIGHTS_SNAPSHOT, snapshot)
        metrics.INSIGHTS_COMPUTE.observe(time.monotonic() - started)
        metrics.INSIGHTS_SNAPSHOT_TIME.set(snapshot["computed_at"])
        log.info(
            "snapshot of %d images: %d computed, %d cached, %.2fs",
            len(images),
            work["computed"],
            work["cached"],
            seconds,
        )
        return snapshot

    def _external_collections(self, images: list[DatasetImage]) -> set[str]:
        """Names of the external collections among those with images: one record read each."""
        names = {image.collection for image in images}
        return {name for name in names if read_collection(self.store, name).external}

    def _load_cached(self, wanted: set[str], stop: threading.Event) -> None:
        """Read the store's cache entries for `wanted` hashes; one listing, then one get each."""
        stored = {key.removeprefix(_CACHE_PREFIX).removesuffix(".json") for key in self.store.list(_CACHE_PREFIX)}
        self._run_each(sorted(wanted & stored), self._load_one, stop)

    def _load_one(self, sha256: str) -> None:
        try:
            entry = json.loads(self.store.get(layout.insights_cache(sha256)))
        except (ObjectNotFound, ValueError):
            return  # vanished or damaged: computed again
        if is_current(entry):
            self._entries[sha256] = entry

    def _compute(self, keys: dict[str, str], stop: threading.Event) -> None:
        """Compute and cache the statistics of each (sha256 -> dataset key)."""

        def compute_one(sha256: str) -> None:
            entry = image_statistics(
                self.store.get(keys[sha256]), max_bytes=self.max_bytes, max_pixels=self.max_pixels, budget=self.budget
            )
            if "error" in entry:
                log.warning("dataset image %s is unreadable: %s", keys[sha256], entry["error"])
            put_json(self.store, layout.insights_cache(sha256), entry)
            self._entries[sha256] = entry
            metrics.INSIGHTS_IMAGES.inc()

        self._run_each(list(keys), compute_one, stop)

    def _run_each(self, items: Iterable[str], task: Callable[[str], None], stop: threading.Event) -> None:
        """Run `task` on each item in the pool; re-raise the first failure; honour `stop`."""

        def guarded(item: str) -> None:
            if stop.is_set():
                raise RefreshCancelled("the service is stopping")
            task(item)

        with ThreadPoolExecutor(self.threads, thread_name_prefix="insights") as pool:
            futures = [pool.submit(guarded, item) for item in items]
            try:
                for future in futures:
                    future.result()
            except BaseException:
                for future in futures:
                    future.cancel()
                raise
