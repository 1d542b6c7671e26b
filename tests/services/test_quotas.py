"""Jobs a client may have queued: counted until answered, or until they expire (pure logic)."""

from __future__ import annotations

import pytest

from services.gateway.quotas import QueuedJobs
from shared.errors import QuotaExceeded


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_client_gets_429_past_its_limit_and_counts_nothing_of_the_refused_request() -> None:
    queued = QueuedJobs(3, clock=Clock())
    queued.admit("10.0.0.1", ["a", "b"])
    with pytest.raises(QuotaExceeded, match="2 of your predictions"):
        queued.admit("10.0.0.1", ["c", "d"])
    assert queued.queued("10.0.0.1") == 2
    queued.admit("10.0.0.1", ["c"])
    queued.admit("10.0.0.2", ["x", "y", "z"])  # another client has its own count


def test_an_answer_frees_its_place_and_unknown_ids_are_ignored() -> None:
    queued = QueuedJobs(1, clock=Clock())
    queued.admit("client", ["a"])
    queued.release("someone-elses")
    queued.release("a")
    queued.release("a")
    queued.admit("client", ["b"])
    assert queued.queued("client") == 1


def test_jobs_whose_answer_never_comes_stop_counting_after_the_ttl() -> None:
    clock = Clock()
    queued = QueuedJobs(2, ttl_s=60, clock=clock)
    queued.admit("client", ["a", "b"])
    clock.now = 59
    with pytest.raises(QuotaExceeded):
        queued.admit("client", ["c"])
    clock.now = 61
    queued.admit("client", ["c", "d"])
    assert queued.queued("client") == 2
