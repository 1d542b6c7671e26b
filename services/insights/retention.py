"""The retention sweep's loop: in the insights service, the one long-running service of one replica.

Every `retention_sweep_interval_s` it deletes expired prediction uploads, results and tombstones
(shared/retention.py) from whichever store is configured, the filesystem or S3. At its first
turn it also sets the S3 store's lifecycle rules (where its credentials may; else the
deployment's bootstrap has), so that store expires predictions by itself should this loop stop.
A store that is away is waited out: the loop logs and tries again.
"""

from __future__ import annotations

import logging
import threading

from shared import metrics
from shared.backoff import Backoff
from shared.errors import StorageAccessDenied
from shared.retention import RetentionPolicy, apply_store_expiry, sweep
from shared.storage import ObjectStore

log = logging.getLogger(__name__)

# A failed sweep is tried again sooner than the next interval: from 1 s, doubling to 30 s.
RETRY_FIRST_S, RETRY_CAP_S = 1.0, 30.0


class RetentionSweeper:
    """Runs `sweep` every `interval_s` until `stopping` is set; no error ends it."""

    def __init__(
        self, store: ObjectStore, policy: RetentionPolicy, interval_s: float, stopping: threading.Event
    ) -> None:
        self.store = store
        self.policy = policy
        self.interval_s = interval_s
        self.stopping = stopping
        self.expiry_rules_set = False

    def run(self) -> None:
        log.info("retention: predictions are %s; sweeping every %.0fs", self.policy.describe(), self.interval_s)
        backoff = Backoff(RETRY_FIRST_S, RETRY_CAP_S)
        while not self.stopping.is_set():
            delay_s = self.interval_s
            try:
                self.turn()
                backoff.reset()
            except Exception as error:  # the store away, or a surprise: logged, retried, never fatal
                delay_s = min(self.interval_s, backoff.next())
                log.warning("retention sweep failed (%r); retrying in %.1fs", error, delay_s)
            self.stopping.wait(delay_s)

    def turn(self) -> None:
        """One pass: the store's own expiry rules once, then a sweep."""
        if not self.expiry_rules_set:
            try:
                native = apply_store_expiry(self.store, self.policy)
            except StorageAccessDenied as error:
                # Scoped credentials: the deployment's bootstrap sets the rules; the sweep goes on.
                log.info("retention: the store's lifecycle rules are not this service's to set (%s)", error)
                native = False
            self.expiry_rules_set = True
            if native:
                log.info(
                    "retention: the store's lifecycle rules expire predictions after %d days too",
                    self.policy.lifecycle_days,
                )
        report = sweep(self.store, self.policy)
        metrics.RETENTION_DELETED.inc(report.deleted)
        metrics.RETENTION_SWEEP_DURATION.observe(report.seconds)
        if report.deleted:
            log.info(
                "retention: deleted %d expired objects of %d examined in %.2fs",
                report.deleted,
                report.examined,
                report.seconds,
            )
