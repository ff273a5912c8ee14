"""`Control` in this process's memory: the memory driver's (on its store's clock)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from runequeue.drivers.base import Control


class MemoryControl:
    """Values by (namespace, name), with their expiry, under a lock."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._values: dict[tuple[str, str], tuple[str, float | None]] = {}

    async def put(self, namespace: str, name: str, value: str, ttl_s: float | None = None) -> None:
        with self._lock:
            expires = None if ttl_s is None else self._clock() + ttl_s
            self._values[namespace, name] = (value, expires)

    async def get_all(self, namespace: str) -> dict[str, str]:
        with self._lock:
            now = self._clock()
            for key in [
                k for k, (_, exp) in self._values.items() if exp is not None and exp <= now
            ]:
                del self._values[key]
            return {
                name: value for (ns, name), (value, _) in self._values.items() if ns == namespace
            }

    async def delete(self, namespace: str, name: str) -> None:
        with self._lock:
            self._values.pop((namespace, name), None)

    async def purge_expired(self) -> None:
        return None  # every read drops the expired values of every namespace


_check: type[Control] = MemoryControl
