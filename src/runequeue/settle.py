"""Handing finished attempts back to the backend: ack, release, or fail.

Acks are batched (one round trip for every job that finished meanwhile) and retried until they
land; so is a bury, because a job whose bury gave up would fail again when its lease expired, as
`LeaseExpired`, with its hook run twice and its real error lost. While either is retried, the
heartbeat keeps the job's lease. A release is tried a few times only: if the backend stays away,
the lease expires and the job comes back all the same.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

from runequeue.backoff import Backoff, BrokerErrors
from runequeue.drivers.base import Driver, Outgoing, Reserved
from runequeue.errors import DriverError
from runequeue.failed_job import FailedJob
from runequeue.heartbeat import Heartbeat
from runequeue.outbox import FailureOutbox
from runequeue.payload import UniqueLock
from runequeue.retry import Ack, Defer, Release
from runequeue.runner import Attempt

log = logging.getLogger("runequeue.worker")

T = TypeVar("T")

# Tries of a release before the worker lets the lease expire instead.
RELEASE_TRIES = 5


class Settler:
    """Settles one worker's attempts with its backend, and counts the jobs that ended."""

    def __init__(
        self,
        driver: Driver,
        heartbeat: Heartbeat,
        outbox: FailureOutbox,
        errors: BrokerErrors,
        *,
        connection: str,
    ) -> None:
        self.driver = driver
        self.processed = 0
        self._heartbeat = heartbeat
        self._outbox = outbox
        self._errors = errors
        self._connection = connection
        self._acks: asyncio.Queue[Reserved | None] = asyncio.Queue()
        self._ack_backoff = Backoff()
        self._settle_backoff = Backoff()

    async def settle(self, item: Reserved, attempt: Attempt) -> None:
        decision = attempt.decision
        if isinstance(decision, Ack):
            if attempt.then or attempt.unique is not None or attempt.batch is not None:
                # A chain's next step, stored in the same atomic step as the ack; a job of a
                # batch, whose counters move in that step; or a unique job, whose lock is freed
                # once its ack has landed: acked on its own, at once.
                await self._ack_then(item, attempt.then, attempt.batch)
                await self._free_lock(item, attempt.unique)
                return
            self._acks.put_nowait(item)  # the heartbeat keeps the lease until the ack lands
            return
        if isinstance(decision, Release | Defer):
            # A deferred job (its class is unknown here) gets its attempt back, as does one that
            # asked to be put back (`Job.release`, a middleware's limit): no try is spent.
            refund = isinstance(decision, Defer) or decision.refund
            await self._release(item, delay_s=decision.delay_s, refund=refund)
        else:
            self.processed += 1
            await self._fail(item, attempt.error_text(), attempt.then, attempt.batch)
            await self._free_lock(item, attempt.unique)
        self._heartbeat.untrack(item)

    async def _free_lock(self, item: Reserved, unique: UniqueLock | None) -> None:
        if unique is None:
            return
        try:
            await self.driver.unlock(item.queue, unique.key, item.job_id)
        except DriverError as exc:
            log.warning("could not free the unique lock of %s; it expires by itself: %s",
                        item.job_id, exc)  # fmt: skip

    async def put_back(self, item: Reserved) -> None:
        """Release ``item`` at once with its attempt given back (a shutdown costs no tries)."""
        await self._release(item, delay_s=0, refund=True)

    async def _release(self, item: Reserved, *, delay_s: float, refund: bool) -> None:
        for _ in range(RELEASE_TRIES):
            try:
                if not await self.driver.release(item, delay_s=delay_s, refund=refund):
                    log.warning("release of %s refused: lease lost", item.job_id)
                self._settle_backoff.reset()
                return
            except DriverError as exc:
                await self._errors.back_off("release", exc, self._settle_backoff)
        log.error("release of %s gave up after %d tries; the job runs again when its lease "
                  "expires", item.job_id, RELEASE_TRIES)  # fmt: skip

    async def _ack_then(self, item: Reserved, then: Sequence[Outgoing], batch: str | None) -> None:
        acked = await self._until_it_lands(
            "ack", lambda: self.driver.ack_then(item, then, batch), self._ack_backoff
        )
        self.processed += 1
        self._heartbeat.untrack(item)
        if not acked:
            log.warning("LOST  %s: finished, but its lease had expired; it may run again",
                        item.job_id)  # fmt: skip

    async def _fail(
        self, item: Reserved, error: str, then: Sequence[Outgoing], batch: str | None
    ) -> None:
        """Record, then delete (invariant 5): bury in the outbox (storing ``then``, a chain's
        catch job, and moving ``batch`` in the same step), record, purge."""
        buried = await self._until_it_lands(
            "fail", lambda: self.driver.bury(item, error, then, batch), self._settle_backoff
        )
        if not buried:
            log.warning("fail of %s refused: lease lost", item.job_id)
            return
        await self._outbox.record(FailedJob(item.job_id, self._connection, item.queue, item.raw,
                                            error))  # fmt: skip

    async def _until_it_lands(
        self, what: str, call: Callable[[], Awaitable[T]], backoff: Backoff
    ) -> T:
        while True:
            try:
                result = await call()
            except DriverError as exc:
                await self._errors.back_off(what, exc, backoff)
                continue
            backoff.reset()
            return result

    async def run_acks(self) -> None:
        """Acknowledge finished jobs in batches until `close_acks`: one round trip for all that
        finished meanwhile."""
        while True:
            batch = [await self._acks.get()]
            while not self._acks.empty():
                batch.append(self._acks.get_nowait())
            jobs = [item for item in batch if item is not None]
            if jobs:
                await self._ack(jobs)
            for _ in batch:
                self._acks.task_done()
            if len(jobs) < len(batch):
                return  # the closing marker: everything queued before it is acked

    def close_acks(self) -> None:
        """Let `run_acks` end once every ack queued so far has landed."""
        self._acks.put_nowait(None)

    async def acks_landed(self) -> None:
        await self._acks.join()

    async def _ack(self, batch: list[Reserved]) -> None:
        results = await self._until_it_lands(
            "ack", lambda: self.driver.ack(batch), self._ack_backoff
        )
        self.processed += len(batch)
        for item, ok in zip(batch, results, strict=True):
            self._heartbeat.untrack(item)
            if not ok:
                log.warning("LOST  %s: finished, but its lease had expired; it may run again",
                            item.job_id)  # fmt: skip
