"""Jittered exponential back-off for broker errors, one per loop that talks to the backend."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random

from runequeue.errors import BackendFull, DriverError
from runequeue.logs import Recurring

log = logging.getLogger("runequeue.worker")


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


class BrokerErrors:
    """How the worker's loops say a broker error and wait before the next try.

    Each error is a warning line, except "out of memory" (`BackendFull`), which comes back at
    every try while Redis is at its limit: it is said once, then once a minute.
    """

    def __init__(self, stopping: asyncio.Event) -> None:
        self._stopping = stopping
        self._backend_full = Recurring()

    async def back_off(
        self, what: str, exc: DriverError, backoff: Backoff, *, until_stop: bool = False
    ) -> None:
        """Log ``exc`` and wait ``backoff``'s next delay; ``until_stop`` cuts the wait short when
        the worker is asked to stop (a reserve has nothing to finish, a settle does)."""
        delay = backoff.next_delay()
        if not isinstance(exc, BackendFull):
            log.warning("%s failed (%s); retrying in %.1fs", what, exc, delay)
        elif (left_out := self._backend_full.due()) is not None:
            log.error("%s failed: %s%s; retrying", what, exc, Recurring.note(left_out))
        if not until_stop:
            await asyncio.sleep(delay)
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), delay)

    def recovered(self) -> None:
        """The backend answers again: the next "out of memory" is said at once."""
        self._backend_full.clear()
