"""Batches held in this process (`BatchStore`): `MemoryBatchStore` for the memory driver, whose
records change under its store's lock in the same step as the jobs they store (its ack_then and
bury move the counters), and `SyncBatches` for the sync driver, which runs each job as it is
stored. Both read, cancel and prune alike (`InMemoryBatches`)."""

from __future__ import annotations

import contextlib
import copy
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING

from runequeue.batch_state import BatchRecord
from runequeue.drivers.base import BatchStore, Outgoing
from runequeue.errors import DispatchError, DriverError

if TYPE_CHECKING:
    from runequeue.drivers.memory_store import MemoryStore, Operation


class InMemoryBatches:
    """Reading, cancelling and pruning records kept in a dict, each under ``changing``'s lock,
    which gives the time."""

    def __init__(
        self,
        records: dict[str, BatchRecord],
        changing: Callable[[Operation], contextlib.AbstractContextManager[float]],
    ) -> None:
        self.records = records
        self._changing = changing

    def find_batch(self, batch_id: str) -> BatchRecord | None:
        with self._changing("size"):
            record = self.records.get(batch_id)
            return copy.deepcopy(record) if record is not None else None

    def list_batches(self, limit: int) -> list[BatchRecord]:
        with self._changing("size"):
            records = sorted(self.records.values(), key=lambda r: r.created_at, reverse=True)
            return [copy.deepcopy(record) for record in records[:limit]]

    def cancel_batch(self, batch_id: str) -> bool:
        with self._changing("ack") as now:
            record = self.records.get(batch_id)
            if record is None:
                return False
            if record.cancelled_at is None:
                record.cancelled_at = now
            return True

    def prune_batches(self, *, finished_before: float, unfinished_before: float | None) -> int:
        with self._changing("clear"):
            doomed = [
                record.id
                for record in self.records.values()
                if record.prunable(finished_before, unfinished_before)
            ]
            for batch_id in doomed:
                del self.records[batch_id]
        return len(doomed)

    def moved(self, batch_id: str, job_id: str, *, succeeded: bool) -> list[Outgoing]:
        """Move a batch's counters for its job (taking the lock): the callbacks now due."""
        with self._changing("ack") as now:
            record = self.records.get(batch_id)
            return [] if record is None else record.moved(job_id, succeeded=succeeded, now=now)


class MemoryBatchStore(InMemoryBatches):
    """`BatchStore` over one `MemoryStore`."""

    def __init__(self, store: MemoryStore) -> None:
        super().__init__(store.batches, store.changing)
        self.store = store

    def create_batch(self, record: BatchRecord, jobs: Sequence[Outgoing]) -> None:
        try:
            with self.store.changing("push"):
                self.records[record.id] = copy.deepcopy(record)
                _, woken = self.store.store_locked(jobs)
        except DriverError as exc:
            raise DispatchError(f"could not dispatch the batch: {exc}") from exc
        self.store.wake(woken)

    def add_to_batch(self, batch_id: str, queue: str, jobs: Sequence[Outgoing]) -> bool:
        try:
            with self.store.changing("push"):
                record = self.records.get(batch_id)
                if record is None:
                    return False
                stored, woken = self.store.store_locked(jobs)
                record.grew(stored)
        except DriverError as exc:
            raise DispatchError(f"could not add to batch {batch_id}: {exc}") from exc
        self.store.wake(woken)
        return True

    def batch_failed(self, queue: str, batch_id: str, job_id: str) -> None:
        with self.store.changing("bury") as now:
            record = self.records.get(batch_id)
            due = [] if record is None else record.moved(job_id, succeeded=False, now=now)
            _, woken = self.store.store_locked(due)
        self.store.wake(woken)


class SyncBatches(InMemoryBatches):
    """The sync driver's batches: records in this process; each job, and each callback as it
    falls due, runs as it is stored (``run``, which moves the counters through `moved`)."""

    def __init__(self, run: Callable[[Sequence[Outgoing]], None]) -> None:
        self._lock = threading.Lock()
        super().__init__({}, self._locked)
        self._run = run

    @contextlib.contextmanager
    def _locked(self, operation: Operation) -> Iterator[float]:
        with self._lock:
            yield time.time()

    def create_batch(self, record: BatchRecord, jobs: Sequence[Outgoing]) -> None:
        with self._lock:
            self.records[record.id] = copy.deepcopy(record)
        self._run(jobs)

    def add_to_batch(self, batch_id: str, queue: str, jobs: Sequence[Outgoing]) -> bool:
        with self._lock:
            record = self.records.get(batch_id)
            if record is None:
                return False
            record.grew(len(jobs))
        self._run(jobs)
        return True

    def batch_failed(self, queue: str, batch_id: str, job_id: str) -> None:
        self._run(self.moved(batch_id, job_id, succeeded=False))


_memory_check: type[BatchStore] = MemoryBatchStore
_sync_check: type[BatchStore] = SyncBatches
