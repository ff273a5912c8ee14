"""The database driver: a ``jobs`` table on SQLite (the embedded default), PostgreSQL or MySQL.

Reserve takes rows with ``SELECT ... FOR UPDATE SKIP LOCKED`` inside one transaction on
PostgreSQL and MySQL 8 / MariaDB 10.6, so workers on many machines never take the same job; on
SQLite every transaction is ``BEGIN IMMEDIATE`` (see `runequeue.db_engine`), which makes a reserve
exclusive. Leases, attempts counted at reserve, lease tokens and the failed outbox work as in the
Redis driver, so both pass the same conformance suite.

SQLAlchemy is blocking: `DatabaseQueue` does the work, and `DatabaseDriver` runs it in threads for
the worker. On PostgreSQL (psycopg 3) a worker's reserve and acknowledgement are one statement
each on asyncio connections of its own (`runequeue.drivers.postgres_hot`), and whatever makes a
job runnable (a push, a release for retry, a lease recovered) sends a NOTIFY in its own
transaction, which wakes idle workers. On SQLite an idle worker watches the file's commit counter
(`runequeue.drivers.sqlite_watch`). MySQL is polled, more slowly the longer it stays empty; a
worker that itself made a job runnable (its release, its recovery) looks again at once. A
PostgreSQL worker that cannot open its LISTEN connection (the server or the role at its
connection limit) polls too, and tries again now and then.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import secrets
import time
from collections.abc import Iterator, Sequence
from typing import TypeGuard

from runequeue.config import QueueConfig
from runequeue.db_engine import sqlite_file
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
from runequeue.drivers.postgres_hot import CannotConnect, HotPath
from runequeue.drivers.sql_control import DatabaseControl
from runequeue.drivers.sql_limits import DatabaseLimits
from runequeue.drivers.sqlite_watch import CommitWatch
from runequeue.errors import DriverError
from runequeue.payload import DEFAULT_MAX_BYTES

# After its connection was refused, the hot path is tried again this often (the pool works on).
HOT_AGAIN_S = 5.0

__all__ = ["DatabaseDriver", "DatabaseQueue", "notified", "open_driver", "open_producer",
           "store_jobs"]  # fmt: skip

log = logging.getLogger("runequeue.worker")


class DatabaseDriver:
    """The worker's asyncio access: `DatabaseQueue` in threads, plus waiting for new jobs."""

    def __init__(self, url: str, *, max_payload_bytes: int = DEFAULT_MAX_BYTES) -> None:
        self.url = url
        self.max_payload_bytes = max_payload_bytes
        self.queue = DatabaseQueue(url, max_payload_bytes=max_payload_bytes)
        self._poll_s = FIRST_POLL_S
        self._look_again = asyncio.Event()  # set when this worker made a job runnable
        # On PostgreSQL through psycopg 3: one statement per reserve and per acknowledgement, and
        # a LISTEN that wakes the worker (`runequeue.drivers.postgres_hot`).
        self._hot = (
            HotPath(self.queue.engine, self.queue.mapped_errors,
                    connect_timeout_s=LISTEN_CONNECT_TIMEOUT_S)
            if notified(url) else None
        )  # fmt: skip
        # On SQLite: another process's commit ends an idle wait (`runequeue.drivers.sqlite_watch`).
        self._watch = CommitWatch(path) if (path := sqlite_file(url)) is not None else None
        self._hot_again_at = 0.0  # monotonic time from which the hot path is tried again
        self._hot_refused = False  # its connection was refused (and that was warned about)
        self._listen_at = 0.0  # monotonic time of the next LISTEN attempt
        self._polling_instead = False  # a LISTEN failed (and was warned about)
        self._closed = False

    async def push(self, items: Sequence[Outgoing]) -> int:
        return await asyncio.to_thread(self.queue.push, items)

    async def reserve(
        self, queue: str, count: int, *, lease_s: float, default_tries: int, alone: bool = False
    ) -> Batch:
        hot = self._hot
        if hot is not None and self._should_listen(hot):
            # Listen before looking: a job made runnable after this reserve found none must
            # wake the wait that follows, and a NOTIFY sent before the LISTEN is lost.
            await self._listen_or_poll(hot)
        batch = None
        if self._hot_usable(hot) and not self._needs_full_reserve(queue, alone):
            with self._pool_if_refused():
                batch = await self._reserve_hot(hot, queue, count, lease_s, default_tries)
        if batch is None:
            batch = await self._reserve_full(queue, count, lease_s, default_tries, alone)
        if batch.jobs:
            self._poll_s = FIRST_POLL_S
        return batch

    def _needs_full_reserve(self, queue: str, alone: bool) -> bool:
        """Work for `DatabaseQueue.reserve`'s transaction: the queue's leases are due to be
        recovered, or a job recovered from a dead worker waits for one running nothing."""
        return self.queue.recovery_due(queue) or (alone and self.queue.recovered_waiting(queue))

    async def _reserve_hot(
        self, hot: HotPath, queue: str, count: int, lease_s: float, default_tries: int
    ) -> Batch:
        """One statement's reserve. Rows it locked but could not hand out (an oversized
        payload) are left to the full reserve, which fails them with the reason and takes
        others in their place."""
        taken = await hot.reserve(
            queue, count, token=secrets.token_hex(16), lease_s=lease_s,
            max_bytes=self.max_payload_bytes,
        )  # fmt: skip
        if taken.picked > len(taken.jobs):
            more = await self._reserve_full(queue, count - len(taken.jobs), lease_s, default_tries)
            return dataclasses.replace(more, jobs=[*taken.jobs, *more.jobs])
        waiting = self.queue.recovered_waiting(queue)
        return Batch(taken.jobs, None if taken.jobs else taken.due_s, waiting)

    async def _reserve_full(
        self, queue: str, count: int, lease_s: float, default_tries: int, alone: bool = False
    ) -> Batch:
        return await asyncio.to_thread(
            self.queue.reserve, queue, count, lease_s=lease_s, default_tries=default_tries,
            alone=alone,
        )  # fmt: skip

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
        hot = self._hot
        if hot is not None and hot.listening:
            await hot.wait(timeout_s)
            return
        if self._watch is not None:
            await self._watch.wait(timeout_s, self._look_again)
            self._look_again.clear()
            return
        # Polled: soon after work was seen, then less and less often while the queue stays empty.
        # Worst case, a job another process makes runnable waits the longest interval: timeout_s.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._look_again.wait(), min(timeout_s, self._poll_s))
        if self._look_again.is_set():
            self._look_again.clear()
            return
        self._poll_s = min(self._poll_s * 2, max(timeout_s, FIRST_POLL_S))

    def _should_listen(self, hot: HotPath) -> bool:
        return not hot.listening and not self._closed and time.monotonic() >= self._listen_at

    async def _listen_or_poll(self, hot: HotPath) -> None:
        """Open the LISTEN connection; if that fails, poll, and try again in `LISTEN_AGAIN_S`.

        The jobs table is still reachable through the pool when a connection of its own is
        refused (max_connections reached, a role's connection limit), so the worker keeps taking
        jobs, seeing other processes' pushes within --sleep, as on a polled database.
        """
        try:
            await hot.listen(NOTIFY_CHANNEL)
        except DriverError as exc:
            self._listen_at = time.monotonic() + LISTEN_AGAIN_S
            if not self._polling_instead:  # once, not at every reserve
                self._polling_instead = True
                log.warning(
                    "could not listen for new jobs: %s; polling for jobs instead (trying LISTEN "
                    "again every %.0fs)",
                    " ".join(str(exc).split()),
                    LISTEN_AGAIN_S,
                )
            return
        if self._polling_instead:
            self._polling_instead = False
            log.info("listening for new jobs again (PostgreSQL LISTEN)")

    async def ack(self, items: Sequence[Reserved]) -> list[bool]:
        hot = self._hot
        if self._hot_usable(hot):
            with self._pool_if_refused():
                return await hot.ack(items)
        return await asyncio.to_thread(self.queue.ack, items)

    def _hot_usable(self, hot: HotPath | None) -> TypeGuard[HotPath]:
        return hot is not None and time.monotonic() >= self._hot_again_at

    @contextlib.contextmanager
    def _pool_if_refused(self) -> Iterator[None]:
        """Let a refused connection of the hot path's own (a role's connection limit reached)
        end quietly: the caller does the work through the pool, as on any database, and the
        hot path is tried again in `HOT_AGAIN_S`. Said once, and again when it is back."""
        try:
            yield
        except CannotConnect as exc:
            self._hot_again_at = time.monotonic() + HOT_AGAIN_S
            if not self._hot_refused:
                self._hot_refused = True
                reason = " ".join(str(exc).split())
                log.warning("%s; reserving and acknowledging through the pool instead (trying "
                            "again every %.0fs)", reason, HOT_AGAIN_S)  # fmt: skip
            return
        if self._hot_refused:
            self._hot_refused = False
            log.info("reserving and acknowledging on connections of the worker's own again")

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
        if self._hot is not None:
            await self._hot.close()
        if self._watch is not None:
            self._watch.close()
        self.queue.close()


_driver_check: type[Driver] = DatabaseDriver
_producer_check: type[Producer] = DatabaseQueue
_keeper_check: type[LeaseKeeper] = DatabaseQueue


def open_producer(config: QueueConfig) -> Producer:
    return DatabaseQueue(config.database_url, held_dispatch=True)


def open_driver(config: QueueConfig) -> Driver:
    return DatabaseDriver(config.database_url, max_payload_bytes=config.max_payload_bytes)
