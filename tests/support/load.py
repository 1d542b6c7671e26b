"""Load for fault tests: synchronous clients and an asynchronous submitter against a gateway,
then every accepted id accounted for.

"Accepted" means the gateway gave the client an id it promised to answer: a 200 (answered
now), a 202 (queued) or a 504 (queued, answer late). A 503 is a refusal: nothing was taken.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from dataclasses import dataclass, field

import requests

from tests.support.images import solid_jpeg

REQUEST_TIMEOUT_S = 30


@dataclass
class LoadRecord:
    """What the clients saw, shared by their threads (guarded by `lock`)."""

    statuses: Counter[str] = field(default_factory=Counter)
    accepted: set[str] = field(default_factory=set)
    # (monotonic time, status) of every synchronous answer, to measure recovery.
    sync_answers: list[tuple[float, int]] = field(default_factory=list)
    refusals_without_retry_after: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def first_success_after(self, moment: float) -> float | None:
        """Seconds from `moment` to the first 200 of a synchronous client, if any."""
        with self.lock:
            times = [at for at, status in self.sync_answers if status == 200 and at >= moment]
        return min(times) - moment if times else None


class Load:
    """`sync_clients` threads predicting in a loop, plus `async_per_s` `?wait=false` posts a second."""

    def __init__(self, gateway_url: str, *, sync_clients: int = 4, async_per_s: float = 10.0) -> None:
        self.gateway_url = gateway_url
        self.record = LoadRecord()
        self._stopping = threading.Event()
        self._threads = [
            threading.Thread(target=self._sync_client, args=(index,), daemon=True) for index in range(sync_clients)
        ]
        if async_per_s > 0:
            self._threads.append(threading.Thread(target=self._async_submitter, args=(async_per_s,), daemon=True))

    def __enter__(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._stopping.set()
        for thread in self._threads:
            thread.join(REQUEST_TIMEOUT_S + 5)

    def burst(self, count: int) -> list[str]:
        """Submit `count` jobs with `?wait=false` as fast as one client can; return accepted ids."""
        return [job_id for _ in range(count) if (job_id := self._post(wait=False)) is not None]

    def _sync_client(self, index: int) -> None:
        while not self._stopping.is_set():
            started = time.monotonic()
            if self._post(wait=True, value=20 + index) is None:
                # Refused or unreachable: back off a little, as a polite client would.
                self._stopping.wait(max(0.2 - (time.monotonic() - started), 0.05))

    def _async_submitter(self, per_s: float) -> None:
        interval_s = 1.0 / per_s
        next_at = time.monotonic()
        while not self._stopping.wait(max(next_at - time.monotonic(), 0)):
            next_at += interval_s
            self._post(wait=False)

    def _post(self, *, wait: bool, value: int = 230) -> str | None:
        """One prediction request; returns the accepted id, or None when nothing was accepted."""
        url = f"{self.gateway_url}/api/v1/predictions" + ("" if wait else "?wait=false")
        try:
            response = requests.post(
                url, files={"file": ("lesion.jpg", solid_jpeg(value), "image/jpeg")}, timeout=REQUEST_TIMEOUT_S
            )
        except requests.RequestException as error:
            self._count(f"connection error ({type(error).__name__})")
            return None
        job_ids = _accepted_ids(response)
        with self.record.lock:
            self.record.statuses[str(response.status_code)] += 1
            self.record.accepted.update(job_ids)
            if wait:
                self.record.sync_answers.append((time.monotonic(), response.status_code))
            if response.status_code == 503 and "Retry-After" not in response.headers:
                self.record.refusals_without_retry_after += 1
        return job_ids[0] if job_ids else None

    def _count(self, outcome: str) -> None:
        with self.record.lock:
            self.record.statuses[outcome] += 1


def _accepted_ids(response: requests.Response) -> list[str]:
    if response.status_code in (200, 202):
        return [response.json()["id"]]
    if response.status_code == 504:
        return list(response.json()["error"]["ids"])
    return []


def account_for(gateway_url: str, job_ids: set[str], timeout_s: float) -> dict[str, list[str]]:
    """Poll every id until it is done or failed, or `timeout_s` passes; group ids by final status."""
    deadline = time.monotonic() + timeout_s
    outstanding = set(job_ids)
    final: dict[str, list[str]] = {"done": [], "failed": []}
    while outstanding and time.monotonic() < deadline:
        for job_id in sorted(outstanding):
            status = _poll(gateway_url, job_id)
            if status in final:
                final[status].append(job_id)
                outstanding.discard(job_id)
        if outstanding:
            time.sleep(0.5)
    final["not finished"] = sorted(outstanding)
    return final


def _poll(gateway_url: str, job_id: str) -> str:
    try:
        response = requests.get(f"{gateway_url}/api/v1/predictions/{job_id}", timeout=10)
    except requests.RequestException:
        return "unreachable"
    if response.status_code != 200:
        return f"http {response.status_code}"
    return str(response.json()["status"])
