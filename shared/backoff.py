"""Capped exponential backoff with jitter: how every loop here waits before trying again."""

from __future__ import annotations

import random


class Backoff:
    """Delays that double from `first_s` up to `cap_s`, each drawn from [delay/2, delay].

    The jitter keeps peers that lost the same server (every worker, when the store goes) from
    retrying in step. `reset()` after a success starts again from `first_s`.
    """

    def __init__(self, first_s: float = 0.5, cap_s: float = 10.0) -> None:
        self.first_s, self.cap_s = first_s, cap_s
        self._next_s = first_s

    def reset(self) -> None:
        self._next_s = self.first_s

    def next(self) -> float:
        delay_s = random.uniform(self._next_s / 2, self._next_s)
        self._next_s = min(self._next_s * 2, self.cap_s)
        return delay_s
