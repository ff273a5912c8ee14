"""The ``sync`` driver: each job runs inside the dispatch call, the way a worker would run it.

It takes the same path as a real backend (encode, decode, rebuild, run, record the failure) so a
job that cannot be stored fails in development, not in production. The job runs once; its error
reaches the caller. Delays are ignored: there is nowhere to wait.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from runequeue.drivers.base import BatchStore, Outgoing, Producer
from runequeue.drivers.memory_batches import SyncBatches

RunNow = Callable[[Outgoing, SyncBatches], Awaitable[None]]


class SyncDriver:
    """A `Producer` whose push runs each job at once with ``run_now``."""

    def __init__(self, run_now: RunNow) -> None:
        self._run_now = run_now
        self._batches = SyncBatches(self._run_batched)

    def push(self, items: Sequence[Outgoing]) -> int:
        for item in items:
            _run_blocking(self._run(item))
        return len(items)  # each one ran

    def push_unique(self, item: Outgoing) -> str:
        """Run it: nothing is queued here, so there is no other copy to be unique against."""
        self.push([item])
        return item.job_id

    async def push_async(self, items: Sequence[Outgoing]) -> None:
        for item in items:
            await self._run(item)

    async def _run(self, item: Outgoing) -> None:
        await self._run_now(item, self._batches)

    def batches(self) -> BatchStore:
        """Batches kept in this process; their jobs run as they are stored."""
        return self._batches

    def _run_batched(self, items: Sequence[Outgoing]) -> None:
        # A batch's failures are the batch's to report (its counters, its catch job, failed_jobs
        # and the FAIL line): dispatching the batch, or adding to it, does not raise them.
        for item in items:
            with contextlib.suppress(Exception):
                _run_blocking(self._run(item))

    def size(self, queue: str) -> int:
        return 0  # nothing ever waits

    def clear(self, queue: str) -> int:
        return 0

    def close(self) -> None:
        return None


def _run_blocking(coro: Coroutine[Any, Any, None]) -> None:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        asyncio.run(coro)
        return
    # A plain dispatch() called from async code: this thread's loop is busy running the caller,
    # so the job gets a loop of its own in a helper thread, and dispatch waits for it.
    with ThreadPoolExecutor(1, thread_name_prefix="runequeue-sync") as pool:
        pool.submit(asyncio.run, coro).result()


_producer_check: type[Producer] = SyncDriver
