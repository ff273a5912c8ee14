"""Per-job timeouts for a whole worker, on one timer.

`asyncio.timeout` per job schedules and cancels an event-loop timer per job; on a no-op job that
was a tenth of the worker's time. A worker's timeouts are seconds long, so one ticker every
`TICK_S` that cancels the tasks past their deadline is as good: a job times out at most
`TICK_S` late, and watching one costs a dict entry.
"""

from __future__ import annotations

import asyncio
import contextlib

TICK_S = 0.05


class Deadlines:
    """Cancels watched tasks once their deadline passes, and remembers which it cancelled, so a
    job's timeout is told apart from any other cancellation (a shutdown, a lost lease)."""

    def __init__(self) -> None:
        self._due: dict[asyncio.Task[object], float] = {}
        self._expired: set[asyncio.Task[object]] = set()
        self._ticker: asyncio.Task[None] | None = None

    def watch(self, task: asyncio.Task[object], timeout_s: float) -> None:
        loop = task.get_loop()
        self._due[task] = loop.time() + timeout_s
        if self._ticker is None or self._ticker.done():
            self._ticker = loop.create_task(self._tick(), name="runequeue-deadlines")

    def unwatch(self, task: asyncio.Task[object]) -> None:
        self._due.pop(task, None)
        self._expired.discard(task)

    def expired(self, task: asyncio.Task[object]) -> bool:
        """Whether this ticker cancelled ``task`` for running past its deadline."""
        return task in self._expired

    async def _tick(self) -> None:
        loop = asyncio.get_running_loop()
        while self._due:
            await asyncio.sleep(TICK_S)
            now = loop.time()
            overdue = [task for task, due in self._due.items() if due <= now]
            for task in overdue:
                del self._due[task]
                self._expired.add(task)
                task.cancel()

    async def close(self) -> None:
        ticker, self._ticker = self._ticker, None
        if ticker is not None:
            ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await ticker
