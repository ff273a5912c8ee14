"""A job's ``failed()`` hook, called once it has failed for good: by the runner, by the failure
outbox for a job the backend failed, and by the sync driver."""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging

from runequeue.job import Job
from runequeue.threads import DaemonThreadPool

log = logging.getLogger("runequeue.worker")


async def call_failed_hook(
    job: Job,
    error: BaseException,
    *,
    timeout_s: float | None = None,
    threads: DaemonThreadPool | None = None,
) -> None:
    """Call the job's ``failed`` hook; its own errors (``SystemExit`` too) are logged, never
    raised. A cancellation (shutdown) still cancels.

    The hook gets ``timeout_s`` (the job's timeout), as its handler does: one still running after
    that is abandoned, with an error line, so a hook that hangs (an alert sent to a host that never
    answers) cannot hold up a worker's shutdown or its sweep. A plain ``def failed`` runs in one
    of ``threads`` (the worker's daemon threads), or outside a worker in a small daemon pool of
    its own, never on the event loop: one that blocks must not hold up every other job.
    """
    if type(job).failed is Job.failed:
        return  # not overridden: nothing to call
    limit = asyncio.timeout(timeout_s)
    try:
        async with limit:
            if inspect.iscoroutinefunction(job.failed):
                await job.failed(error)
            else:
                result = await _plain_hook(job, error, threads or _hook_threads())
                if inspect.isawaitable(result):
                    await result
    except asyncio.CancelledError:
        raise
    except BaseException as exc:
        if isinstance(exc, TimeoutError) and limit.expired():
            log.error("failed() hook of %s (%s) still running after %gs: abandoned",
                      type(job).job_name, job.job_id, timeout_s)  # fmt: skip
            return
        log.exception("failed() hook of %s (%s) raised", type(job).job_name, job.job_id)


async def _plain_hook(job: Job, error: BaseException, threads: DaemonThreadPool) -> object:
    call = threads.submit(job.failed, error)
    try:
        return await asyncio.wrap_future(call)
    except asyncio.CancelledError:
        threads.abandon(call)  # timed out or shut down: its thread no longer counts as busy
        raise


@functools.cache
def _hook_threads() -> DaemonThreadPool:
    """Threads for plain ``failed`` hooks called outside a worker (the sync driver, a retry)."""
    return DaemonThreadPool(4, name="runequeue-hook")
