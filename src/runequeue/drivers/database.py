"""The database driver: a ``jobs`` table on SQLite (the embedded default), PostgreSQL or MySQL.

Reserve takes rows with ``SELECT ... FOR UPDATE SKIP LOCKED`` inside one transaction on
PostgreSQL and MySQL 8 / MariaDB 10.6, so workers on many machines never take the same job; on
SQLite every transaction is ``BEGIN IMMEDIATE`` (see `runequeue.db_engine`), which makes a reserve
exclusive. Leases, attempts counted at reserve, lease tokens and the failed outbox work as in the
Redis driver, so both pass the same conformance suite.

SQLAlchemy is blocking: `DatabaseQueue` does the work, and `DatabaseDriver` runs it in threads for
the worker. On PostgreSQL, whatever makes a job runnable (a push, a release for retry, a lease
recovered) sends a NOTIFY in its own transaction, which wakes idle workers. Other databases are
polled, more slowly the longer they stay empty; a worker that itself made a job runnable (its
release, its recovery) looks again at once. A PostgreSQL worker that cannot open its LISTEN
connection (the server or the role at its connection limit) polls too, and tries again now and
then.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence
from typing import Any

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
from runequeue.drivers.database_queue import (
    FIRST_POLL_S,
    LISTEN_AGAIN_S,
    LISTEN_CONNECT_TIMEOUT_S,
    NOTIFY_CHANNEL,
    DatabaseQueue,
    notified,
    store_jobs,
)
from runequeue.drivers.sql_control import DatabaseControl
from runequeue.drivers.sql_limits import DatabaseLimits
from runequeue.errors import (
    DriverUnavailable,
)
from runequeue.payload import DEFAULT_MAX_BYTES

__all__ = ["DatabaseDriver", "DatabaseQueue", "notified", "open_driver", "open_producer",
           "store_jobs"]  # fmt: skip

log = logging.getLogger("runequeue.worker")


class DatabaseDriver:
    """The worker's asyncio access: `DatabaseQueue` in threads, plus waiting for new jobs."""

    def __init__(self, url: str, *, max_payload_bytes: int = DEFAULT_MAX_BYTES) -> None:
        self.url = url
        self.queue = DatabaseQueue(url, max_payload_bytes=max_payload_bytes)
        self._poll_s = FIRST_POLL_S
        self._look_again = asyncio.Event()  # set when this worker made a job runnable
        self._notified = notified(url)
        self._listener: Any = None  # a psycopg 3 connection in LISTEN, on PostgreSQL
        self._listen_at = 0.0  # monotonic time of the next LISTEN attempt
        self._polling_instead = False  # a LISTEN failed (and was warned about)
        self._closed = False

    async def push(self, items: Sequence[Outgoing]) -> int:
        return await asyncio.to_thread(self.queue.push, items)

    async def reserve(
        self, queue: str, count: int, *, lease_s: float, default_tries: int, alone: bool = False
    ) -> Batch:
        if self._should_listen():
            # Listen before looking: a job made runnable after this reserve found none must
            # wake the wait that follows, and a NOTIFY sent before the LISTEN is lost.
            await asyncio.to_thread(self._listen_or_poll)
        batch = await asyncio.to_thread(
            self.queue.reserve, queue, count, lease_s=lease_s, default_tries=default_tries,
            alone=alone,
        )  # fmt: skip
        if batch.jobs:
            self._poll_s = FIRST_POLL_S
        return batch

    async def recover(self, queue: str, *, default_tries: int) -> None:
        if await asyncio.to_thread(self.queue.recover, queue, default_tries=default_tries):
            self._runnable_here()

    def _runnable_here(self) -> None:
        """This worker made a job runnable: a polling wait ends now and polls quickly again.

        Other processes learn of it by polling (PostgreSQL's NOTIFY reaches them at once).
        """
        self._poll_s = FIRST_POLL_S
        self._look_again.set()

    async def wait(self, queues: Sequence[str], timeout_s: float) -> None:
        listener = self._listener
        if listener is not None:
            await asyncio.to_thread(self._wait_for_notify, listener, timeout_s)
            return
        # Polled: soon after work was seen, then less and less often while the queue stays empty.
        # Worst case, a job another process makes runnable waits the longest interval: timeout_s.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._look_again.wait(), min(timeout_s, self._poll_s))
        if self._look_again.is_set():
            self._look_again.clear()
            return
        self._poll_s = min(self._poll_s * 2, max(timeout_s, FIRST_POLL_S))

    def _should_listen(self) -> bool:
        return (
            self._notified
            and self._listener is None
            and not self._closed
            and time.monotonic() >= self._listen_at
        )

    def _listen_or_poll(self) -> None:
        """Open the LISTEN connection; if that fails, poll, and try again in `LISTEN_AGAIN_S`.

        The jobs table is still reachable through the pool when a connection of its own is
        refused (max_connections reached, a role's connection limit), so the worker keeps taking
        jobs, seeing other processes' pushes within --sleep, as on a polled database.
        """
        try:
            self._listen()
        except DriverUnavailable as exc:
            self._listen_at = time.monotonic() + LISTEN_AGAIN_S
            if not self._polling_instead:  # once, not at every reserve
                self._polling_instead = True
                log.warning(
                    "%s; polling for jobs instead (trying LISTEN again every %.0fs)",
                    " ".join(str(exc).split()),
                    LISTEN_AGAIN_S,
                )
            return
        if self._polling_instead:
            self._polling_instead = False
            log.info("listening for new jobs again (PostgreSQL LISTEN)")

    def _listen(self) -> None:
        if self._listener is not None:  # another reserve of this worker was first
            return
        try:
            # A connection of its own, outside the pool: a LISTEN must outlive checkouts.
            dialect = self.queue.engine.dialect
            args, kwargs = dialect.create_connect_args(self.queue.engine.url)
            kwargs = {**kwargs, "connect_timeout": LISTEN_CONNECT_TIMEOUT_S, "autocommit": True}
            self._listener = dialect.loaded_dbapi.connect(*args, **kwargs)
            self._listener.execute(f"LISTEN {NOTIFY_CHANNEL}")
        except Exception as exc:  # psycopg's errors: this module must not import psycopg
            self._drop_listener()
            raise DriverUnavailable(f"could not listen for new jobs: {exc}") from exc

    def _wait_for_notify(self, listener: Any, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        try:
            # In short slices, so that a closed driver's thread ends soon instead of blocking
            # the worker's exit for up to --sleep seconds.
            while not self._closed and (remaining := deadline - time.monotonic()) > 0:
                if list(listener.notifies(timeout=min(remaining, 0.5), stop_after=1)):
                    return
        except Exception as exc:
            self._drop_listener()
            raise DriverUnavailable(f"could not wait for jobs: {exc}") from exc

    def _drop_listener(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            with contextlib.suppress(Exception):
                listener.close()

    async def ack(self, items: Sequence[Reserved]) -> list[bool]:
        return await asyncio.to_thread(self.queue.ack, items)

    async def release(self, item: Reserved, *, delay_s: float, refund: bool) -> bool:
        released = await asyncio.to_thread(self.queue.release, item, delay_s=delay_s, refund=refund)
        if released:
            self._runnable_here()
        return released

    async def ack_then(
        self, item: Reserved, then: Sequence[Outgoing], batch: str | None = None
    ) -> bool:
        return await asyncio.to_thread(self.queue.ack_then, item, then, batch)

    async def push_unique(self, item: Outgoing) -> str:
        return await asyncio.to_thread(self.queue.push_unique, item)

    async def unlock(self, queue: str, unique_key: str, job_id: str) -> None:
        await asyncio.to_thread(self.queue.unlock, queue, unique_key, job_id)

    async def bury(
        self,
        item: Reserved,
        error: str,
        then: Sequence[Outgoing] = (),
        batch: str | None = None,
    ) -> bool:
        return await asyncio.to_thread(self.queue.bury, item, error, then, batch)

    async def buried(self, queue: str, limit: int) -> list[Buried]:
        return await asyncio.to_thread(self.queue.buried, queue, limit)

    async def purge(self, queue: str, job_id: str) -> None:
        await asyncio.to_thread(self.queue.purge, queue, job_id)

    async def claim_failed_hook(self, queue: str, job_id: str) -> bool:
        return await asyncio.to_thread(self.queue.claim_failed_hook, queue, job_id)

    async def size(self, queue: str) -> int:
        return await asyncio.to_thread(self.queue.size, queue)

    async def counts(self, queue: str) -> QueueCounts:
        return await asyncio.to_thread(self.queue.counts, queue)

    async def clear(self, queue: str) -> int:
        return await asyncio.to_thread(self.queue.clear, queue)

    def batches(self) -> BatchStore:
        return self.queue.batches()

    def limits(self) -> Limits:
        return DatabaseLimits(self.queue.engine, self.queue.mapped_errors)

    def control(self) -> Control:
        return DatabaseControl(self.queue.engine, self.queue.mapped_errors)

    def lease_keeper(self) -> LeaseKeeper:
        return DatabaseQueue(self.url)  # an engine, and so connections, of its own

    async def close(self) -> None:
        self._closed = True
        self._drop_listener()
        self.queue.close()


_driver_check: type[Driver] = DatabaseDriver
_producer_check: type[Producer] = DatabaseQueue
_keeper_check: type[LeaseKeeper] = DatabaseQueue


def open_producer(config: QueueConfig) -> Producer:
    return DatabaseQueue(config.database_url)


def open_driver(config: QueueConfig) -> Driver:
    return DatabaseDriver(config.database_url, max_payload_bytes=config.max_payload_bytes)
