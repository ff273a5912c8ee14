"""Running a job here and now, outside a worker: the sync driver's dispatch, and a retried
``sync`` job. One attempt, no timeout; then what follows it (a chain's next step, a batch's
callbacks now due)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from runequeue.drivers.base import BatchStore, Outgoing
from runequeue.errors import RuneQueueError
from runequeue.failed_job import FailedJob
from runequeue.payload import Codec
from runequeue.retry import Release
from runequeue.runner import Attempt, JobDefaults, log_attempt, run_attempt
from runequeue.text import one_line

if TYPE_CHECKING:
    from runequeue.drivers.memory_batches import SyncBatches
    from runequeue.failed_store import FailedJobStore

log = logging.getLogger("runequeue.worker")


async def run_once(
    raw: bytes, codec: Codec, batches: Callable[[], BatchStore] | None = None
) -> Attempt:
    """Run a job's one and only attempt here and now, with no timeout, and log its line: the
    sync driver's dispatch, and a retried ``sync`` job."""
    attempt = await run_attempt(raw, 1, JobDefaults(tries=1, timeout_s=None), codec=codec,
                                only_try=True, batches=batches)  # fmt: skip
    log_attempt(attempt, 1)
    return attempt


async def run_now(
    raw: bytes,
    *,
    connection: str,
    queue: str,
    store: FailedJobStore,
    codec: Codec,
    batches: SyncBatches | None = None,
) -> None:
    """Run a job once, here and now (the sync driver), then what follows it: a chain's next
    step, or the callbacks of its batch now due.

    On failure its hook is called and the failure recorded, then its error is raised. If the
    failure cannot be recorded (no ``failed_jobs`` table, database down), that is logged as a
    warning and the job's own error is still what the caller gets: code (and tests) that expect
    ``RuntimeError`` from a job must not get a storage error instead.
    """
    attempt = await run_once(raw, codec, (lambda: batches) if batches is not None else None)
    if isinstance(attempt.decision, Release) and attempt.decision.refund:  # the job's own
        log.warning("%s (%s) asked to be released, but the sync driver has no queue to put it "
                    "back on: it is not run again", attempt.job_name, attempt.job_id)  # fmt: skip
        return
    follows = list(attempt.then)
    if attempt.batch is not None and batches is not None:
        follows += batches.moved(attempt.batch, attempt.job_id, succeeded=attempt.error is None)

    async def run_next(item: Outgoing) -> None:
        await run_now(item.raw, connection=connection, queue=item.queue, store=store,
                      codec=codec, batches=batches)  # fmt: skip

    if attempt.error is None:
        for item in follows:  # the rest of a chain, in order; a batch's then and finally
            await run_next(item)
        return
    failure = FailedJob(attempt.job_id, connection, queue, raw, attempt.error_text())
    try:
        await asyncio.to_thread(store.record, failure)
    except RuneQueueError as exc:  # FailedStoreError, or a ConfigError (no database driver)
        log.warning(
            "job %s (%s) failed with %s and could not be recorded in failed_jobs: %s",
            attempt.job_name,
            attempt.job_id,
            type(attempt.error).__name__,
            one_line(exc),  # whatever the database said
        )
    for item in follows:  # a catch job (a chain's, a batch's); the caller still gets this error
        try:
            await run_next(item)
        except Exception:
            log.warning("%s, which follows failed job %s, failed too", item.job_id,
                        attempt.job_id)  # fmt: skip
    raise attempt.error
