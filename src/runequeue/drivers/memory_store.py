"""The memory driver's store: queues in this process's memory (`MemoryStore`), with the same
promises as the Redis and database backends. `runequeue.drivers.memory` is the driver over it."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import secrets
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Literal

from runequeue.batch_state import BatchRecord
from runequeue.drivers.base import (
    Batch,
    Buried,
    Outgoing,
    QueueCounts,
    Reserved,
)
from runequeue.drivers.memory_control import MemoryControl
from runequeue.errors import DriverError, DriverUnavailable
from runequeue.failure_reasons import HOOK_CLAIMED, lease_expired_text, too_large_text
from runequeue.limits import MemoryLimits

# As the other drivers: recovered leases and due delayed jobs handled per reserve call.
RECOVER_LIMIT = 100
HEAD_KEPT_BYTES = 65536  # what is kept of a payload failed for being too large

Operation = Literal[
    "push", "reserve", "recover", "wait", "ack", "release", "bury", "buried", "purge",
    "claim_failed_hook", "size", "counts", "clear", "extend", "unlock",
]  # fmt: skip


@dataclasses.dataclass(slots=True)
class _Job:
    raw: bytes
    max_tries: int | None
    attempts: int = 0
    token: str | None = None
    error: str = ""


@dataclasses.dataclass(slots=True)
class _Queue:
    """One queue: where each of its jobs is. A job id is in exactly one of ready, recovered,
    delayed, reserved and dead, and in ``jobs`` until it is acknowledged or purged."""

    jobs: dict[str, _Job] = dataclasses.field(default_factory=dict)
    ready: collections.deque[str] = dataclasses.field(default_factory=collections.deque)
    recovered: collections.deque[str] = dataclasses.field(default_factory=collections.deque)
    delayed: dict[str, float] = dataclasses.field(default_factory=dict)  # id -> due time
    reserved: dict[str, float] = dataclasses.field(default_factory=dict)  # id -> lease deadline
    dead: dict[str, float] = dataclasses.field(default_factory=dict)  # id -> failed at (ordered)
    wakeups: int = 0  # as Redis's notify list: a push leaves some, a wait takes one

    def size(self) -> int:
        return len(self.ready) + len(self.recovered) + len(self.delayed) + len(self.reserved)


@dataclasses.dataclass(slots=True)
class _Fault:
    times: int
    error: DriverError


class MemoryStore:
    """The queues of one process (`default_store`), or of one test (``MemoryStore()``).

    Every operation takes the store's lock: producers, workers on other event loops and the
    heartbeat thread may all use it at once.
    """

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._offset_s = 0.0
        self._lock = threading.Lock()
        self._queues: dict[str, _Queue] = collections.defaultdict(_Queue)
        self._faults: dict[Operation, _Fault] = {}
        # Unique jobs' locks: (queue, key) -> (job id, expiry on this store's clock).
        self._locks: dict[tuple[str, str], tuple[str, float]] = {}
        # Batches by id (`memory_batches`), changed under the lock only.
        self.batches: dict[str, BatchRecord] = {}
        self.limits = MemoryLimits(self._now)  # job middleware's counters and locks
        self.control = MemoryControl(self._now)  # live workers, paused queues, restarts
        self._waiters: dict[str, set[tuple[asyncio.AbstractEventLoop, asyncio.Event]]] = (
            collections.defaultdict(set)
        )

    # -- for tests ---------------------------------------------------------------------------

    def fail(self, operation: Operation, times: int = 1, error: DriverError | None = None) -> None:
        """Make the next ``times`` calls of ``operation`` raise ``error`` (by default
        `DriverUnavailable`, as an unreachable server does), before they change anything."""
        shown = error or DriverUnavailable(f"memory driver: injected fault in {operation}")
        with self._lock:
            self._faults[operation] = _Fault(times, shown)

    def queue_names(self) -> list[str]:
        """The queues holding a job, ready, delayed or running."""
        with self._lock:
            return sorted(name for name, q in self._queues.items() if q.size())

    def skip_to_next_due(self) -> bool:
        """Move the clock to the next delayed job's time (`advance`); whether one was waiting."""
        with self._lock:
            dues = [due for q in self._queues.values() for due in q.delayed.values()]
            wait = max(min(dues) - self._now(), 0.0) if dues else None
        if wait is None:
            return False
        self.advance(wait + 0.001)
        return True

    def advance(self, seconds: float) -> None:
        """Move the store's clock forward: leases expire and delayed jobs fall due."""
        with self._lock:
            self._offset_s += seconds
            queues = [name for name, q in self._queues.items() if q.delayed or q.reserved]
        for name in queues:
            self.wake([name])

    def reset(self) -> None:
        """Forget every job and fault."""
        with self._lock:
            self._queues.clear()
            self._faults.clear()
            self._locks.clear()
            self.batches.clear()
            self.limits = MemoryLimits(self._now)
            self.control = MemoryControl(self._now)
            self._offset_s = 0.0

    # -- the operations ----------------------------------------------------------------------

    @contextlib.contextmanager
    def _operation(self, operation: Operation) -> Iterator[None]:
        with self._lock:
            fault = self._faults.get(operation)
            if fault is not None:
                fault.times -= 1
                if fault.times <= 0:
                    del self._faults[operation]
                raise fault.error
            yield

    def _now(self) -> float:
        return self._clock() + self._offset_s

    def push(self, items: Sequence[Outgoing]) -> int:
        with self._operation("push"):
            stored, woken = self.store_locked(items)
        self.wake(woken)
        return stored

    @contextlib.contextmanager
    def changing(self, operation: Operation) -> Iterator[float]:
        """Hold the store's lock for a change (failing as an injected fault says); gives the
        store's time. For `memory_batches`, whose changes are atomic with the jobs they store."""
        with self._operation(operation):
            yield self._now()

    def store_locked(self, items: Sequence[Outgoing]) -> tuple[int, set[str]]:
        """Store ``items`` (under the lock): how many were stored, and the queues to `wake`."""
        stored = 0
        woken: set[str] = set()
        now = self._now()
        for item in items:
            q = self._queues[item.queue]
            if item.job_id in q.jobs:
                continue  # a push repeated after an ambiguous error stores nothing twice
            q.jobs[item.job_id] = _Job(item.raw, item.max_tries)
            if item.delay_s > 0:
                q.delayed[item.job_id] = now + item.delay_s
            else:
                q.ready.append(item.job_id)
            # A delayed job wakes idle workers too: their wait was set from the delayed jobs
            # they saw, and this one may be due sooner.
            q.wakeups = min(q.wakeups + 1, 64)
            woken.add(item.queue)
            stored += 1
        return stored, woken

    def reserve(
        self, queue: str, count: int, *, lease_s: float, default_tries: int, alone: bool,
        max_payload_bytes: int, operation: Operation = "reserve",
    ) -> Batch:  # fmt: skip
        with self._operation(operation):
            now = self._now()
            q = self._queues[queue]
            moved = self._promote_and_recover(q, now, default_tries)
            token = secrets.token_hex(16)
            jobs: list[Reserved] = []
            if count > 0 and alone and q.recovered:
                job_id = q.recovered.popleft()
                jobs.append(self._lease(q, queue, job_id, token, now + lease_s, recovered=True))
                count = 1  # it goes out by itself: it may be what killed its last worker
            while len(jobs) < count and q.ready:
                job_id = q.ready.popleft()
                job = q.jobs[job_id]
                if len(job.raw) > max_payload_bytes:
                    job.attempts += 1
                    size = len(job.raw)
                    job.raw = job.raw[:HEAD_KEPT_BYTES]
                    self._bury(q, job_id, now, too_large_text(size, max_payload_bytes))
                    continue
                jobs.append(self._lease(q, queue, job_id, token, now + lease_s, recovered=False))
            if not q.ready and not q.recovered:
                q.wakeups = 0  # nothing ready: stale wake-ups would only cause empty reserves
            elif moved:
                q.wakeups = min(q.wakeups + moved, 64)
            next_due = min(q.delayed.values()) - now if q.delayed else None
            waiting = bool(q.recovered)
        if moved:
            self.wake([queue])
        return Batch(jobs, None if next_due is None else max(next_due, 0.0), waiting)

    def _promote_and_recover(self, q: _Queue, now: float, default_tries: int) -> int:
        due = sorted((at, job_id) for job_id, at in q.delayed.items() if at <= now)
        for _, job_id in due[:RECOVER_LIMIT]:
            del q.delayed[job_id]
            q.ready.append(job_id)
        moved = min(len(due), RECOVER_LIMIT)
        expired = sorted((at, job_id) for job_id, at in q.reserved.items() if at <= now)
        for _, job_id in expired[:RECOVER_LIMIT]:
            del q.reserved[job_id]
            job = q.jobs[job_id]
            job.token = None
            tries = job.max_tries if job.max_tries is not None else default_tries
            if job.attempts >= tries:
                q.dead[job_id] = now
                job.error = lease_expired_text(job.attempts)
            else:
                q.recovered.append(job_id)  # apart: it runs alone (it may be what killed them)
                moved += 1
        return moved

    @staticmethod
    def _lease(
        q: _Queue, queue: str, job_id: str, token: str, deadline: float, *, recovered: bool
    ) -> Reserved:
        job = q.jobs[job_id]
        job.attempts += 1
        job.token = token
        q.reserved[job_id] = deadline
        return Reserved(queue, job_id, job.raw, job.attempts, token, recovered)

    @staticmethod
    def _bury(q: _Queue, job_id: str, now: float, error: str) -> None:
        q.dead[job_id] = now
        q.jobs[job_id].error = error

    def _holds(self, item: Reserved) -> _Job | None:
        """The job, if ``item``'s lease is still the one holding it."""
        q = self._queues[item.queue]
        job = q.jobs.get(item.job_id)
        if job is None or job.token != item.token or item.job_id not in q.reserved:
            return None
        return job

    def ack(self, items: Sequence[Reserved]) -> list[bool]:
        with self._operation("ack"):
            results = []
            for item in items:
                held = self._holds(item) is not None
                if held:
                    q = self._queues[item.queue]
                    del q.reserved[item.job_id]
                    del q.jobs[item.job_id]
                results.append(held)
            return results

    def extend(self, items: Sequence[Reserved], lease_s: float) -> list[bool]:
        with self._operation("extend"):
            deadline = self._now() + lease_s
            results = []
            for item in items:
                held = self._holds(item) is not None
                if held:
                    self._queues[item.queue].reserved[item.job_id] = deadline
                results.append(held)
            return results

    def release(self, item: Reserved, *, delay_s: float, refund: bool) -> bool:
        with self._operation("release"):
            job = self._holds(item)
            if job is None:
                return False
            q = self._queues[item.queue]
            del q.reserved[item.job_id]
            job.token = None
            if refund:
                job.attempts -= 1
            if delay_s > 0:
                q.delayed[item.job_id] = self._now() + delay_s
            elif refund:
                q.ready.appendleft(item.job_id)  # interrupted by a shutdown: run it next
            else:
                q.ready.append(item.job_id)
            q.wakeups = min(q.wakeups + 1, 64)
        self.wake([item.queue])
        return True

    def push_unique(self, item: Outgoing) -> str:
        assert item.unique_key is not None
        with self._operation("push"):
            now = self._now()
            lock = (item.queue, item.unique_key)
            held = self._locks.get(lock)
            if held is not None and held[1] > now:
                return held[0]
            self._locks[lock] = (item.job_id, now + item.unique_for_s)
        try:
            self.push([item])
        except BaseException:  # not stored: the lock must not hold for a job that is not there
            self.unlock(item.queue, item.unique_key, item.job_id)
            raise
        return item.job_id

    def unlock(self, queue: str, unique_key: str, job_id: str) -> None:
        with self._operation("unlock"):
            held = self._locks.get((queue, unique_key))
            if held is not None and held[0] == job_id:
                del self._locks[queue, unique_key]

    def ack_then(self, item: Reserved, then: Sequence[Outgoing], batch: str | None = None) -> bool:
        with self._operation("ack"):
            if self._holds(item) is None:
                return False
            q = self._queues[item.queue]
            del q.reserved[item.job_id]
            del q.jobs[item.job_id]
            self._store_followers(q, [*then, *self._batch_moved(batch, item.job_id, True)])
        self.wake([item.queue])
        return True

    def bury(
        self,
        item: Reserved,
        error: str,
        then: Sequence[Outgoing] = (),
        batch: str | None = None,
    ) -> bool:
        with self._operation("bury"):
            job = self._holds(item)
            if job is None:
                return False
            q = self._queues[item.queue]
            del q.reserved[item.job_id]
            job.token = None
            self._bury(q, item.job_id, self._now(), error)
            then = [*then, *self._batch_moved(batch, item.job_id, False)]
            self._store_followers(q, then)
        if then:
            self.wake([item.queue])
        return True

    def _batch_moved(self, batch: str | None, job_id: str, succeeded: bool) -> list[Outgoing]:
        """Move ``batch``'s counters for its job (under the lock): the callbacks now due."""
        record = self.batches.get(batch) if batch is not None else None
        return [] if record is None else record.moved(job_id, succeeded=succeeded, now=self._now())

    @staticmethod
    def _store_followers(q: _Queue, then: Sequence[Outgoing]) -> None:
        """Store ``then`` ready on ``q`` (under the lock); an id still stored is skipped."""
        for follower in then:
            if follower.job_id not in q.jobs:
                q.jobs[follower.job_id] = _Job(follower.raw, follower.max_tries)
                q.ready.append(follower.job_id)
                q.wakeups = min(q.wakeups + 1, 64)

    def buried(self, queue: str, limit: int) -> list[Buried]:
        with self._operation("buried"):
            q = self._queues[queue]
            ids = list(q.dead)[:limit]
            return [
                Buried(queue, job_id, q.jobs[job_id].raw, q.jobs[job_id].error) for job_id in ids
            ]

    def purge(self, queue: str, job_id: str) -> None:
        with self._operation("purge"):
            q = self._queues[queue]
            if q.dead.pop(job_id, None) is not None:
                del q.jobs[job_id]

    def claim_failed_hook(self, queue: str, job_id: str) -> bool:
        with self._operation("claim_failed_hook"):
            job = self._queues[queue].jobs.get(job_id)
            if job is None or job_id not in self._queues[queue].dead or job.token is not None:
                return False
            job.token = HOOK_CLAIMED
            return True

    def size(self, queue: str) -> int:
        with self._operation("size"):
            return self._queues[queue].size()

    def counts(self, queue: str) -> QueueCounts:
        with self._operation("counts"):
            q = self._queues[queue]
            return QueueCounts(ready=len(q.ready) + len(q.recovered), delayed=len(q.delayed),
                               reserved=len(q.reserved))  # fmt: skip

    def clear(self, queue: str) -> int:
        with self._operation("clear"):
            q = self._queues[queue]
            ids = [*q.ready, *q.recovered, *q.delayed, *q.reserved]
            for job_id in ids:
                del q.jobs[job_id]
            q.ready.clear()
            q.recovered.clear()
            q.delayed.clear()
            q.reserved.clear()
            q.wakeups = 0
            return len(ids)

    # -- waiting for work --------------------------------------------------------------------

    async def wait(self, queues: Sequence[str], timeout_s: float) -> None:
        event = asyncio.Event()
        waiter = (asyncio.get_running_loop(), event)
        with self._operation("wait"):
            if self._take_wakeup(queues):
                return
            for queue in queues:
                self._waiters[queue].add(waiter)
        try:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(event.wait(), timeout_s)
        finally:
            with self._lock:
                for queue in queues:
                    self._waiters[queue].discard(waiter)
                self._take_wakeup(queues)

    def _take_wakeup(self, queues: Sequence[str]) -> bool:
        for queue in queues:
            q = self._queues[queue]
            if q.wakeups > 0:
                q.wakeups -= 1
                return True
        return False

    def wake(self, queues: Iterable[str]) -> None:
        """Wake the workers waiting on ``queues`` (outside the lock)."""
        for queue in queues:
            with self._lock:
                waiters = list(self._waiters.get(queue, ()))
            for loop, event in waiters:
                with contextlib.suppress(RuntimeError):  # that worker's loop has closed
                    loop.call_soon_threadsafe(event.set)


_default_store = MemoryStore()


def default_store() -> MemoryStore:
    """The store every ``driver="memory"`` configuration of this process uses."""
    return _default_store
