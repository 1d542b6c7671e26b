"""How many prediction jobs each client may have waiting: a few anonymous clients cannot fill
the queue (PREDICT_QUEUE_MAX_LENGTH) for everyone else.

Counted per gateway process, from a job's publication until its answer comes back over the
broker (every job asks for one, `?wait=false` ones too), or for `QUEUED_JOB_TTL_S` if the
answer is lost with a broker connection. With P gateway processes a client may have up to P
times the limit queued; the proxy's per-address rate limit bounds how fast it gets there.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from shared.errors import QuotaExceeded

# Longer than a full queue takes to drain at the slowest measured throughput (2,000 jobs at
# about 10 a second), so an answered job is normally released by its answer, not by this.
QUEUED_JOB_TTL_S = 600.0
# Expired entries of clients who never come back are swept at most this often.
_SWEEP_INTERVAL_S = 1.0


class QueuedJobs:
    """Job ids each client has queued (in this process), with when each stops counting."""

    def __init__(
        self, per_client: int, *, ttl_s: float = QUEUED_JOB_TTL_S, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.per_client = per_client
        self._ttl_s = ttl_s
        self._clock = clock
        self._lock = threading.Lock()
        self._expiry_by_client: dict[str, dict[str, float]] = {}
        self._client_of_job: dict[str, str] = {}
        self._next_sweep = 0.0

    def admit(self, client: str, job_ids: list[str]) -> None:
        """Count `job_ids` against `client`, or raise QuotaExceeded (429) and count nothing."""
        now = self._clock()
        with self._lock:
            self._sweep(now)
            jobs = self._expiry_by_client.setdefault(client, {})
            if len(jobs) + len(job_ids) > self.per_client:
                raise QuotaExceeded(
                    f"{len(jobs)} of your predictions are still queued and {len(job_ids)} more were sent; at most"
                    f" {self.per_client} may wait at once: retry when some are answered"
                )
            for job_id in job_ids:
                jobs[job_id] = now + self._ttl_s
                self._client_of_job[job_id] = client

    def release(self, job_id: str) -> None:
        """The job was answered (or never published): it no longer counts. Unknown ids are ignored."""
        with self._lock:
            client = self._client_of_job.pop(job_id, None)
            if client is None:
                return
            jobs = self._expiry_by_client.get(client, {})
            jobs.pop(job_id, None)
            if not jobs:
                self._expiry_by_client.pop(client, None)

    def queued(self, client: str) -> int:
        with self._lock:
            self._sweep(self._clock())
            return len(self._expiry_by_client.get(client, {}))

    def _sweep(self, now: float) -> None:
        if now < self._next_sweep:
            return
        self._next_sweep = now + _SWEEP_INTERVAL_S
        for client, jobs in list(self._expiry_by_client.items()):
            for job_id in [job_id for job_id, expires in jobs.items() if expires <= now]:
                del jobs[job_id]
                self._client_of_job.pop(job_id, None)
            if not jobs:
                del self._expiry_by_client[client]
