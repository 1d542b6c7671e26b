"""The drift loop: `predictions.scored` events in, gauges and `insights/drift/latest.json` out.

Events are samples, not work: one that cannot be read is logged and dropped (acked), never
requeued, so no event can stall the window. The broker loop and the store writes run in
separate threads: a slow or absent store must not hold up the connection's heartbeats, and
a lost broker must not stop the last figures from being written.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from services.insights.drift import (
    DRIFT_THRESHOLD,
    FORGET_AFTER_S,
    MIN_WINDOW,
    RELOAD_AFTER_S,
    WARNINGS,
    WINDOW,
    Reference,
    ReferenceLoader,
    Scored,
    VersionWindow,
)
from shared.backoff import Backoff
from shared.errors import MessageDecodeError, SkinLesionError
from shared.messaging.channel import Channel
from shared.messaging.consumer import BrokerAddress, ConsumerLoop
from shared.messaging.schemas import Event
from shared.messaging.topology import Topology
from shared.metrics import INPUT_DRIFT, INPUT_DRIFT_PREDICTIONS, INPUT_DRIFT_WINDOW, INPUT_FLAGGED_SHARE
from shared.settings import Settings
from shared.storage import ObjectStore, layout, put_json

log = logging.getLogger(__name__)

PREFETCH_EVENTS = 100
RECORD_INTERVAL_S = 10.0


class DriftMonitor:
    """The windows of every version served lately, their gauges, and the record the gateway shows.

    Thread-safe: the broker loop ingests, the record loop reads.
    """

    def __init__(
        self, load_reference: ReferenceLoader, *, window: int = WINDOW, clock: Callable[[], float] = time.time
    ) -> None:
        self._load_reference = load_reference
        self._window = window
        self._clock = clock
        self._windows: dict[str, VersionWindow] = {}
        self._references: dict[str, Reference | None] = {}
        self._failed_at: dict[str, float] = {}
        self._lock = threading.Lock()
        self.changes = 0  # ingested events so far: the record loop writes when it moved

    def ingest(self, body: bytes) -> None:
        """Add one event's predictions to its version's window; raise MessageDecodeError for a bad one."""
        event = Event.decode(body)
        version, items = event.data.get("model_version"), event.data.get("predictions")
        if not isinstance(version, str) or not version or not isinstance(items, list):
            raise MessageDecodeError(f"predictions.scored needs model_version and predictions: {event.data}")
        now = self._clock()
        with self._lock:
            window = self._windows.get(version)
            scored = _parse_all(items, window.components if window else None)
            if window is None:
                window = self._windows[version] = VersionWindow(self._window)
            window.add(scored, now)
            window.note_drift(self._drift(version, window, now), now)
            self._export(version, window)
            # Last: a scrape that sees this event counted sees its figures too.
            INPUT_DRIFT_PREDICTIONS.labels(version).inc(len(scored))
            self._forget_idle(now)
            self.changes += 1

    def record(self) -> dict[str, Any]:
        """What `GET /api/v1/insights/drift` serves (docs/insights.md, "Input drift")."""
        with self._lock:
            versions = {version: window.summary() for version, window in sorted(self._windows.items())}
        return {
            "computed_at": self._clock(),
            "threshold": DRIFT_THRESHOLD,
            "window_size": self._window,
            "min_window": MIN_WINDOW,
            "versions": versions,
        }

    def _drift(self, version: str, window: VersionWindow, now: float) -> float | None:
        if len(window.predictions) < MIN_WINDOW:
            return None
        reference = self._reference(version, now)
        if reference is None:
            return None
        if reference.points.shape[1] != window.components:
            log.error(
                "version %s: projections of %s numbers, reference of %d",
                version,
                window.components,
                reference.points.shape[1],
            )
            return None
        return reference.drift(window.projections())

    def _reference(self, version: str, now: float) -> Reference | None:
        """The version's reference, loaded once; a failed load is retried after RELOAD_AFTER_S."""
        if version in self._references:
            return self._references[version]
        if now - self._failed_at.get(version, -RELOAD_AFTER_S) < RELOAD_AFTER_S:
            return None
        try:
            points = self._load_reference(version)
        except SkinLesionError as error:  # the store away, or the version's files: try again later
            log.warning("cannot load the drift reference of %s: %s", version, error)
            self._failed_at[version] = now
            return None
        self._references[version] = None if points is None or len(points) < 2 else Reference.of(points)
        if self._references[version] is None:
            log.info("version %s has no drift reference; its window counts warnings only", version)
        return self._references[version]

    def _export(self, version: str, window: VersionWindow) -> None:
        INPUT_DRIFT_WINDOW.labels(version).set(len(window.predictions))
        if window.drift is not None:
            INPUT_DRIFT.labels(version).set(window.drift)
        for warning in WARNINGS:
            share = window.flagged_share(warning)
            if share is not None:
                INPUT_FLAGGED_SHARE.labels(version, warning).set(share)

    def _forget_idle(self, now: float) -> None:
        """Drop versions without predictions for FORGET_AFTER_S: their series would only mislead."""
        for version in [name for name, window in self._windows.items() if now - window.last_seen > FORGET_AFTER_S]:
            del self._windows[version]
            self._references.pop(version, None)
            _remove_series(version)


def _parse_all(items: list[Any], components: int | None) -> list[Scored]:
    """An event's predictions, every projection as long as the window's (or the first one's)."""
    scored = []
    for item in items:
        scored.append(Scored.parse(item, components))
        components = len(scored[-1].projection)
    return scored


def _remove_series(version: str) -> None:
    series = [(gauge, (version,)) for gauge in (INPUT_DRIFT, INPUT_DRIFT_WINDOW, INPUT_DRIFT_PREDICTIONS)]
    series += [(INPUT_FLAGGED_SHARE, (version, warning)) for warning in WARNINGS]
    for gauge, labels in series:
        with contextlib.suppress(KeyError):  # never exported (too few predictions yet)
            gauge.remove(*labels)


class DriftConsumer:
    """Feeds the monitor from insights' drift queue; reconnects with backoff, whatever fails."""

    def __init__(self, settings: Settings, monitor: DriftMonitor, stopping: threading.Event) -> None:
        self.topology = Topology.from_settings(settings)
        self.monitor = monitor
        self.stopping = stopping
        # Drift events wait in their queue while the broker connection is away.
        self._loop = ConsumerLoop(
            "drift monitor",
            BrokerAddress(settings.amqp_url, settings.amqp_ca_file),
            self.topology,
            stopping=stopping,
            prefetch=PREFETCH_EVENTS,
            backoff=Backoff(first_s=1.0, cap_s=30.0),
        )
        self.connected = self._loop.connected

    def run(self) -> None:
        """Consume until `stopping` is set; nothing the broker raises ends this loop."""
        self._loop.run(self._consume)

    def _consume(self, channel: Channel) -> None:
        """One connection's life; returns when the service stops (a lost connection raises)."""
        log.info("consuming %s", self.topology.drift_queue)
        for delivery in channel.deliveries(self.topology.drift_queue, inactivity_timeout_s=0.5):
            if self.stopping.is_set():
                break
            if delivery is not None:
                self._ingest(delivery.body)
                channel.ack(delivery.tag)

    def _ingest(self, body: bytes) -> None:
        """Add an event to the windows; a bad one is dropped: it is a sample, not work."""
        try:
            self.monitor.ingest(body)
        except MessageDecodeError as error:
            log.warning("dropped a malformed predictions.scored event: %s", error)
        except Exception:  # never requeued: a poison event would come back for ever
            log.exception("dropped a predictions.scored event that could not be used")


def write_records(
    monitor: DriftMonitor, store: ObjectStore, stopping: threading.Event, interval_s: float = RECORD_INTERVAL_S
) -> None:
    """Write the monitor's record every `interval_s` while it changes, and once more at stop.

    A store failure is logged and retried at the next interval: the figures live in memory
    (and in the gauges) meanwhile.
    """
    written = 0
    while True:
        stopped = stopping.wait(interval_s)
        changes = monitor.changes
        if changes != written:
            try:
                put_json(store, layout.INSIGHTS_DRIFT, monitor.record())
                written = changes
            except Exception as error:  # the store away, or a surprise: the next round tries again
                log.warning("cannot write the drift record: %s", error)
        if stopped:
            return
