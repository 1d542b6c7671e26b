"""The one backoff every retry loop uses: doubling, capped, jittered, reset after a success."""

from __future__ import annotations

import pytest

from shared.backoff import Backoff


@pytest.mark.parametrize(
    ("first_s", "cap_s", "ceilings_s"),
    [
        (0.5, 5.0, [0.5, 1.0, 2.0, 4.0, 5.0, 5.0]),
        (1.0, 30.0, [1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0]),
        (2.0, 2.0, [2.0, 2.0, 2.0]),
    ],
)
def test_each_delay_lies_between_half_and_all_of_a_doubling_capped_ceiling(
    first_s: float, cap_s: float, ceilings_s: list[float]
) -> None:
    backoff = Backoff(first_s, cap_s)
    for ceiling_s in ceilings_s:
        assert ceiling_s / 2 <= backoff.next() <= ceiling_s


def test_a_reset_starts_again_from_the_first_delay() -> None:
    backoff = Backoff(1.0, 30.0)
    for _ in range(5):
        backoff.next()
    backoff.reset()
    assert 0.5 <= backoff.next() <= 1.0


def test_delays_are_jittered_so_peers_do_not_retry_in_step() -> None:
    assert len({Backoff(1.0, 1.0).next() for _ in range(20)}) > 1
