"""The ``memory`` driver: queues in this process's memory, for tests and for embedding a worker.

It keeps the promises of the Redis and database drivers (leases with tokens, attempts counted at
reserve, recovered jobs run alone, a failed outbox, delayed jobs, wake-ups) and passes the same
conformance suite, but nothing outlives the process and no other process sees its jobs: a worker
must run in the process that dispatches (Laravel's ``sync`` and ``null``, dramatiq's StubBroker
and procrastinate's InMemoryConnector play the same part).

For tests of failure paths, a `MemoryStore` takes injected faults (`MemoryStore.fail`) and a clock
of the test's own (`MemoryStore.advance`), so a lost lease or an unreachable backend costs
milliseconds instead of a killed server.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from runequeue.config import QueueConfig
from runequeue.drivers.base import (
    Batch,
    BatchStore,
    Buried,
    Control,
    Driver,
    LeaseKeeper,
    Limits,
    Outgoing,
    Producer,
    QueueCounts,
    Reserved,
)
from runequeue.drivers.memory_batches import MemoryBatchStore
from runequeue.drivers.memory_store import MemoryStore, default_store
from runequeue.errors import DispatchError, DriverError
from runequeue.payload import DEFAULT_MAX_BYTES

__all__ = ["MemoryDriver", "MemoryProducer", "MemoryStore", "default_store"]


class MemoryDriver:
    """The worker's access to a `MemoryStore`; also its producer and its lease keeper."""

    def __init__(
        self, store: MemoryStore | None = None, *, max_payload_bytes: int = DEFAULT_MAX_BYTES
    ) -> None:
        self.store = store if store is not None else default_store()
        self.max_payload_bytes = max_payload_bytes

    async def push(self, items: Sequence[Outgoing]) -> int:
        return _dispatched(self.store.push, items)

    async def reserve(
        self, queue: str, count: int, *, lease_s: float, default_tries: int, alone: bool = False
    ) -> Batch:
        return self.store.reserve(
            queue, count, lease_s=lease_s, default_tries=default_tries, alone=alone,
            max_payload_bytes=self.max_payload_bytes,
        )  # fmt: skip

    async def recover(self, queue: str, *, default_tries: int) -> None:
        self.store.reserve(
            queue, 0, lease_s=1, default_tries=default_tries, alone=False,
            max_payload_bytes=self.max_payload_bytes, operation="recover",
        )  # fmt: skip

    async def wait(self, queues: Sequence[str], timeout_s: float) -> None:
        await self.store.wait(queues, timeout_s)

    async def ack(self, items: Sequence[Reserved]) -> list[bool]:
        return self.store.ack(items)

    async def release(self, item: Reserved, *, delay_s: float, refund: bool) -> bool:
        return self.store.release(item, delay_s=delay_s, refund=refund)

    async def ack_then(
        self, item: Reserved, then: Sequence[Outgoing], batch: str | None = None
    ) -> bool:
        return self.store.ack_then(item, then, batch)

    async def push_unique(self, item: Outgoing) -> str:
        return _dispatched_unique(self.store, item)

    async def unlock(self, queue: str, unique_key: str, job_id: str) -> None:
        self.store.unlock(queue, unique_key, job_id)

    async def bury(
        self,
        item: Reserved,
        error: str,
        then: Sequence[Outgoing] = (),
        batch: str | None = None,
    ) -> bool:
        return self.store.bury(item, error, then, batch)

    async def buried(self, queue: str, limit: int) -> list[Buried]:
        return self.store.buried(queue, limit)

    async def purge(self, queue: str, job_id: str) -> None:
        self.store.purge(queue, job_id)

    async def claim_failed_hook(self, queue: str, job_id: str) -> bool:
        return self.store.claim_failed_hook(queue, job_id)

    async def size(self, queue: str) -> int:
        return self.store.size(queue)

    async def counts(self, queue: str) -> QueueCounts:
        return self.store.counts(queue)

    async def clear(self, queue: str) -> int:
        return self.store.clear(queue)

    def lease_keeper(self) -> LeaseKeeper:
        return MemoryProducer(self.store)

    def batches(self) -> BatchStore:
        return MemoryBatchStore(self.store)

    def limits(self) -> Limits:
        return self.store.limits

    def control(self) -> Control:
        return self.store.control

    async def close(self) -> None:
        return None


class MemoryProducer:
    """Blocking access to a `MemoryStore`: dispatch, size, clear, and lease renewal."""

    def __init__(self, store: MemoryStore | None = None) -> None:
        self.store = store if store is not None else default_store()

    def push(self, items: Sequence[Outgoing]) -> int:
        return _dispatched(self.store.push, items)

    def push_unique(self, item: Outgoing) -> str:
        return _dispatched_unique(self.store, item)

    def batches(self) -> BatchStore:
        return MemoryBatchStore(self.store)

    def size(self, queue: str) -> int:
        return self.store.size(queue)

    def clear(self, queue: str) -> int:
        return self.store.clear(queue)

    def extend(self, items: Sequence[Reserved], lease_s: float) -> list[bool]:
        return self.store.extend(items, lease_s)

    def close(self) -> None:
        return None


def _dispatched(push: Callable[[Sequence[Outgoing]], int], items: Sequence[Outgoing]) -> int:
    try:
        return push(items)
    except DriverError as exc:
        raise DispatchError(f"could not dispatch: {exc}") from exc


def _dispatched_unique(store: MemoryStore, item: Outgoing) -> str:
    try:
        return store.push_unique(item)
    except DriverError as exc:
        raise DispatchError(f"could not dispatch: {exc}") from exc


def open_producer(config: QueueConfig) -> Producer:
    return MemoryProducer()


def open_driver(config: QueueConfig) -> Driver:
    return MemoryDriver(max_payload_bytes=config.max_payload_bytes)


_driver_check: type[Driver] = MemoryDriver
_producer_check: type[Producer] = MemoryProducer
_keeper_check: type[LeaseKeeper] = MemoryProducer
