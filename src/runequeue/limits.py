"""`Limits` kept in this process's memory: the memory driver's (on its store's clock), and the one
job middleware uses outside a worker (the sync driver)."""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Callable

from runequeue.drivers.base import Limits


class MemoryLimits:
    """Fixed-window counters and expiring locks in a dict, under a lock."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._counters: dict[str, tuple[int, float]] = {}  # key -> (hits, resets at)
        self._locks: dict[str, tuple[str, float]] = {}  # key -> (owner, expires at)

    async def hit(self, key: str, window_s: float) -> tuple[int, float]:
        with self._lock:
            now = self._clock()
            hits, resets_at = self._counters.get(key, (0, 0.0))
            if resets_at <= now:
                hits, resets_at = 0, now + window_s
            self._counters[key] = (hits + 1, resets_at)
            return hits + 1, resets_at - now

    async def hits(self, key: str) -> tuple[int, float]:
        with self._lock:
            now = self._clock()
            hits, resets_at = self._counters.get(key, (0, 0.0))
            return (hits, resets_at - now) if resets_at > now else (0, 0.0)

    async def clear(self, key: str) -> None:
        with self._lock:
            self._counters.pop(key, None)

    async def lock(self, key: str, owner: str, ttl_s: float) -> bool:
        with self._lock:
            now = self._clock()
            held = self._locks.get(key)
            if held is not None and held[1] > now and held[0] != owner:
                return False
            self._locks[key] = (owner, now + ttl_s)
            return True

    async def unlock(self, key: str, owner: str) -> None:
        with self._lock:
            held = self._locks.get(key)
            if held is not None and held[0] == owner:
                del self._locks[key]


@functools.cache
def process_limits() -> MemoryLimits:
    """This process's limits, for middleware run outside a worker."""
    return MemoryLimits()


_check: type[Limits] = MemoryLimits
