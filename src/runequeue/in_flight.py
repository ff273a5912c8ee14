"""The reservations a worker is running, and how many more it may take.

One `Running` record per reservation, keyed by its lease (job id and token): that is what the
heartbeat and the backend know a reservation by, and a retried job can be reserved again (a new
token) before the task of its previous attempt has finished.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools

from runequeue.drivers.base import Reserved

LeaseKey = tuple[str, str]  # (job id, lease token)


@dataclasses.dataclass(slots=True, eq=False)
class Running:
    """One reservation being worked on: the job as reserved, its task, and whether the heartbeat
    found its lease taken by another worker (then its attempt is abandoned, not put back)."""

    item: Reserved
    task: asyncio.Task[None]
    lost: bool = False


def lease_key(item: Reserved) -> LeaseKey:
    return item.job_id, item.token


class InFlight:
    """The running reservations of one worker, and the slot rule.

    The rule: at most ``concurrency`` at once; and a job recovered from a dead worker runs alone
    (see `Driver.reserve`), so while one runs, or the backend said some wait, the worker takes
    nothing more until its other jobs have finished.
    """

    def __init__(self, concurrency: int) -> None:
        self.concurrency = concurrency
        self.recovered_waiting = False
        # Set whenever a reservation ends: the worker's loop waits on it when it is busy.
        self.slot_free = asyncio.Event()
        self._running: dict[LeaseKey, Running] = {}
        self._alone: LeaseKey | None = None

    def __len__(self) -> int:
        return len(self._running)

    def __bool__(self) -> bool:
        return bool(self._running)

    def add(self, item: Reserved, task: asyncio.Task[None]) -> None:
        key = lease_key(item)
        if item.recovered:
            self._alone = key
        self._running[key] = Running(item, task)
        task.add_done_callback(functools.partial(self._finished, key))

    def get(self, item: Reserved) -> Running | None:
        return self._running.get(lease_key(item))

    def tasks(self) -> list[asyncio.Task[None]]:
        return [running.task for running in self._running.values()]

    def busy(self) -> bool:
        """No slot to reserve into: all taken, or a recovered job runs or waits to."""
        if len(self._running) >= self.concurrency:
            return True
        return bool(self._running) and (self._alone is not None or self.recovered_waiting)

    def _finished(self, key: LeaseKey, _: asyncio.Task[None]) -> None:
        del self._running[key]
        if self._alone == key:
            self._alone = None
        self.slot_free.set()
