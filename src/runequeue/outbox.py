"""Failed jobs on their way into the failed-job store (invariant 5: record, then delete).

A worker first buries a failed job in its backend's outbox (`Driver.bury`), then records it in
``failed_jobs``, and only then purges it from the backend. If the store is away, the job waits in
the outbox and every sweep tries again, so a database outage loses no failure.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence

from runequeue import chains, payload
from runequeue.drivers.base import Buried, Driver
from runequeue.errors import (
    DatabaseAccessDenied,
    DatabaseUnavailable,
    DriverError,
    FailedStoreError,
    LeaseExpired,
    MissingDatabase,
    MissingTable,
    PayloadError,
)
from runequeue.failed_hook import call_failed_hook
from runequeue.failed_job import FailedJob
from runequeue.failed_store import FailedJobStore
from runequeue.failure_reasons import FailReason, message_of
from runequeue.payload import Codec, Envelope
from runequeue.retry import Fail
from runequeue.threads import DaemonThreadPool

log = logging.getLogger("runequeue.worker")

# The store or the backend is away (or set up wrong): every failure would wait, not just one.
_AWAY = (DriverError, DatabaseUnavailable, MissingTable, MissingDatabase, DatabaseAccessDenied)


class FailureOutbox:
    """Records a worker's failed jobs, from its backend's outbox into ``store``."""

    def __init__(
        self,
        driver: Driver,
        store: FailedJobStore,
        *,
        connection: str,
        codec: Codec,
        hook_timeout_s: float | None = None,
        threads: DaemonThreadPool | None = None,
    ) -> None:
        self.driver = driver
        self.store = store
        self.connection = connection
        self.codec = codec
        # For the hooks of jobs failed by the backend: the worker's default timeout (a job's own
        # wins) and its threads.
        self._hook_timeout_s = hook_timeout_s
        self._threads = threads

    async def record(self, failure: FailedJob) -> bool:
        """Record a buried job and purge it from the backend; ``False`` if it has to wait."""
        try:
            await self._record_and_purge(failure)
        except (FailedStoreError, DriverError) as exc:
            _kept(failure, exc)
            return False
        return True

    async def record_waiting(self, queue: str) -> None:
        """Record the jobs waiting in the outbox of ``queue`` (a sweep).

        A failure the store refuses is skipped (and logged, once a sweep): the failures behind
        it are recorded all the same. A store or backend that is away ends the sweep; the next
        one tries again.
        """
        for buried in await self.driver.buried(queue, 100):
            if buried.reason is FailReason.LEASE_EXPIRED:
                await self._count_in_batch(buried)
            failure = await self._hooked_failure(buried)
            try:
                await self._record_and_purge(failure)
            except (FailedStoreError, DriverError) as exc:
                _kept(failure, exc)
                if isinstance(exc, _AWAY):
                    return

    async def flush(self, queues: Sequence[str]) -> None:
        """One last try to record failures still waiting in the outbox before exiting."""
        for queue in queues:
            with contextlib.suppress(DriverError):
                await self.record_waiting(queue)

    async def _record_and_purge(self, failure: FailedJob) -> None:
        await asyncio.to_thread(self.store.record, failure)
        await self.driver.purge(failure.queue, failure.job_id)

    async def _hooked_failure(self, buried: Buried) -> FailedJob:
        """``buried`` as a failure to record, once its ``failed()`` hook has been called."""
        if buried.reason is FailReason.LEASE_EXPIRED and await self.driver.claim_failed_hook(
            buried.queue, buried.job_id
        ):
            # Failed inside the backend when its last lease expired: no worker has run its hook.
            # The claim makes this worker the one that does, once across all workers; a crash
            # before the call below means it is not called (at most once, like Laravel's).
            name = payload.peek_name(buried.raw) or "?"
            log.info("%-5s %-32s %s lease expired, no tries left", "FAIL", name, buried.job_id)
            with contextlib.suppress(PayloadError):
                envelope = self.codec.decode(buried.raw)
                await self._dispatch_catch(envelope)
                job = payload.build_job(envelope, attempt=0)
                timeout_s = (
                    envelope.timeout if envelope.timeout is not None else self._hook_timeout_s
                )
                await call_failed_hook(job, LeaseExpired(message_of(buried.error)),
                                       timeout_s=timeout_s, threads=self._threads)  # fmt: skip
        return FailedJob(buried.job_id, self.connection, buried.queue, buried.raw, buried.error)

    async def _count_in_batch(self, buried: Buried) -> None:
        """Count the failure of a batch's job that the backend failed (its last worker died, so
        no bury moved the batch). Done at every sweep until the job is purged: it counts once."""
        try:
            ref = self.codec.decode(buried.raw).batch
        except PayloadError:
            return  # unreadable: its batch cannot be known (nor its job run)
        if ref and ref.counted:
            batches = self.driver.batches()
            await asyncio.to_thread(batches.batch_failed, buried.queue, ref.id, buried.job_id)

    async def _dispatch_catch(self, envelope: Envelope) -> None:
        """Store the catch job of a chain whose step the backend failed (its last worker died):
        claimed once, as the hook is. Its id is fixed, so storing it twice stores it once."""
        catch = chains.followers(envelope, Fail(LeaseExpired.__name__), self.codec)
        if catch:
            try:
                await self.driver.push(catch)
            except DriverError as exc:
                log.error("could not dispatch %s, the catch job of chain step %s: %s",
                          catch[0].job_id, envelope.id, exc)  # fmt: skip


def _kept(failure: FailedJob, exc: Exception) -> None:
    log.warning("failed job %s kept in the outbox until it can be recorded: %s",
                failure.job_id, exc)  # fmt: skip
