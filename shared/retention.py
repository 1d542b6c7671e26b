"""How long a prediction's image and result are kept, and the sweep that deletes them after.

`PREDICTION_RETENTION_DAYS` (default 30) bounds the age of everything a prediction leaves in
the store: the uploaded image, its result, its heat map, and the tombstone of a deletion. 0 keeps nothing
once the answer was delivered (the gateway deletes at delivery) and at most an hour otherwise.
Labelled dataset images (`datasets/`) are never expired.

Enforcement does not depend on the store: the insights service runs `sweep` every
`RETENTION_SWEEP_INTERVAL_S` against whichever store is configured. On S3 bootstrap (and insights,
where its credentials may) also sets bucket lifecycle rules (`apply_store_expiry`), so the store
expires objects by itself should the sweep not run; S3 counts in whole days, so for 0 the rule says one day and the
sweep keeps the hour.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime

from shared.settings import Settings
from shared.storage import ObjectStore, layout

HOUR_S = 3600.0
DAY_S = 86400.0


@dataclass(frozen=True)
class RetentionPolicy:
    """The retention of predictions, in days; 0 means delete at delivery, at most after an hour."""

    days: int

    @classmethod
    def from_settings(cls, settings: Settings) -> RetentionPolicy:
        return cls(settings.prediction_retention_days)

    @property
    def max_age_s(self) -> float:
        """No object of a prediction is older than this once the sweep has run."""
        return self.days * DAY_S if self.days else HOUR_S

    @property
    def delete_on_delivery(self) -> bool:
        return self.days == 0

    @property
    def lifecycle_days(self) -> int:
        """S3 lifecycle rules count whole days, one at least."""
        return max(self.days, 1)

    def is_expired(self, stored_at: float, now: float) -> bool:
        return stored_at + self.max_age_s <= now

    def day_may_have_expired(self, day: datetime, now: float) -> bool:
        """Whether a prediction of `day` (UTC) may already be swept: its id alone then says "gone"."""
        return day.timestamp() + self.max_age_s <= now

    def describe(self) -> str:
        if self.delete_on_delivery:
            return "deleted once the answer is delivered, at most one hour after upload"
        return f"deleted {self.days} day{'s' if self.days != 1 else ''} after upload"


@dataclass(frozen=True)
class SweepReport:
    examined: int
    deleted: int
    seconds: float


def _day_of_key(key: str) -> datetime | None:
    """The UTC day in a prediction key's job id (`{yyyymmdd}-{hex}`), or None for a foreign key."""
    name = key.rpartition("/")[2]
    try:
        return datetime.strptime(name[:8], "%Y%m%d").replace(tzinfo=UTC)
    except ValueError:
        return None


def sweep(store: ObjectStore, policy: RetentionPolicy, now: float | None = None) -> SweepReport:
    """Delete every prediction upload, result, heat map and tombstone older than the policy allows.

    Keys come oldest day first, and nothing of a day is older than the day's start, so the
    walk of a prefix stops at the first day that began after the cutoff: a sweep reads the
    expired objects and one day's worth of keys, not the whole retention window.
    """
    started = time.monotonic()
    now = time.time() if now is None else now
    cutoff = now - policy.max_age_s
    examined = deleted = 0
    for prefix in layout.PREDICTION_PREFIXES:
        for key, modified in store.list_with_times(prefix):
            day = _day_of_key(key)
            if day is not None and day.timestamp() > cutoff:
                break
            examined += 1
            if modified <= cutoff:
                store.delete(key)
                deleted += 1
    return SweepReport(examined, deleted, time.monotonic() - started)


def apply_store_expiry(store: ObjectStore, policy: RetentionPolicy) -> bool:
    """Set the store's own expiry rules for predictions; False when the store has none (filesystem)."""
    days = policy.lifecycle_days
    uploads = store.set_expiry("uploads", {"predictions/": days})
    results = store.set_expiry("results", {"predictions/": days, "heatmaps/": days, "tombstones/": days})
    return uploads and results
