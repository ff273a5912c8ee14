"""Jittered exponential back-off for broker errors, one per loop that talks to the backend."""

from __future__ import annotations

import random


class Backoff:
    """0.1 s doubling to 10 s, each delay drawn from its upper half (jitter).

    Each of the worker's loops (reserve, ack, settle) keeps its own: a run of failed acks must
    not lengthen the wait of a reserve that has started to work again, and the other way round.
    """

    def __init__(self, *, first_s: float = 0.1, cap_s: float = 10.0) -> None:
        self.failures = 0
        self._first_s = first_s
        self._cap_s = cap_s

    def next_delay(self) -> float:
        self.failures += 1
        ceiling = min(self._cap_s, self._first_s * 2.0 ** (self.failures - 1))
        return random.uniform(0.5, 1.0) * ceiling

    def reset(self) -> None:
        self.failures = 0
