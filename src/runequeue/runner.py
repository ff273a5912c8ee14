"""Running one attempt of one job: decode -> build -> handle under a timeout -> decide.

Shared by the worker and the sync driver, so a job that cannot be stored or rebuilt fails the same
way in development as in production.
"""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
import logging
import time
import traceback
from concurrent.futures import Executor
from typing import Literal

from runequeue import payload
from runequeue.deadlines import Deadlines
from runequeue.errors import JobTimeout, PayloadError, RuneQueueError
from runequeue.failed import FailedJob, FailedJobStore
from runequeue.job import Backoff, Job, is_async_handler
from runequeue.payload import Codec
from runequeue.retry import Ack, Decision, Fail, Release, decide

log = logging.getLogger("runequeue.worker")

Status = Literal["DONE", "RETRY", "FAIL"]
DEFAULT_CODEC = Codec()


@dataclasses.dataclass(frozen=True, slots=True)
class JobDefaults:
    """Options for jobs that set none themselves (the worker's ``--tries``, ``--timeout``, ...)."""

    tries: int = 3
    timeout_s: float | None = 60.0
    backoff: Backoff = 0


@dataclasses.dataclass(frozen=True, slots=True)
class Attempt:
    """The result of one attempt."""

    decision: Decision
    job_name: str
    job_id: str
    error: BaseException | None
    duration_s: float

    @property
    def status(self) -> Status:
        if isinstance(self.decision, Ack):
            return "DONE"
        return "RETRY" if isinstance(self.decision, Release) else "FAIL"

    def error_text(self) -> str:
        """The error as stored in the failed-job store: type, message and traceback."""
        if self.error is None:
            return ""
        return describe_error(self.error)


def describe_error(error: BaseException) -> str:
    kind = type(error)
    lines = traceback.format_exception(error)
    return f"{kind.__module__}.{kind.__qualname__}: {error}\n\n{''.join(lines)}"


async def run_attempt(
    raw: bytes,
    attempts: int,
    defaults: JobDefaults,
    executor: Executor | None = None,
    *,
    codec: Codec = DEFAULT_CODEC,
    only_try: bool = False,
    deadlines: Deadlines | None = None,
) -> Attempt:
    """Run attempt number ``attempts`` of the stored job ``raw``.

    Job errors never escape: they become the attempt's decision. ``asyncio.CancelledError`` does
    escape (the worker cancels a job on shutdown or when its lease is lost).
    """
    started = time.perf_counter()
    try:
        envelope = codec.decode(raw)
        job = payload.build_job(envelope, attempt=attempts)
    except PayloadError as exc:
        # Invariant 4: a payload that cannot become a job is failed at once, never retried.
        job_id = payload.peek_id(raw) or "?"
        return Attempt(Fail(type(exc).__name__), "?", job_id, exc, time.perf_counter() - started)

    tries = envelope.max_tries if envelope.max_tries is not None else defaults.tries
    if only_try:
        tries = 1
    timeout_s = envelope.timeout if envelope.timeout is not None else defaults.timeout_s
    backoff = envelope.backoff if envelope.backoff is not None else defaults.backoff
    error = await _handle(job, timeout_s, executor, deadlines)
    decision = decide(attempts, tries, backoff, error)
    if isinstance(decision, Fail) and error is not None:
        await call_failed_hook(job, error)
    return Attempt(decision, envelope.job, envelope.id, error, time.perf_counter() - started)


async def _handle(
    job: Job, timeout_s: float | None, executor: Executor | None, deadlines: Deadlines | None
) -> Exception | None:
    """Run the handler; past ``timeout_s``, ``deadlines`` cancels it. That is the worker's shared
    ticker, or, for a job run on its own (the sync driver), a ticker of the job's own."""
    if deadlines is None:
        deadlines = Deadlines()
        try:
            return await _handle(job, timeout_s, executor, deadlines)
        finally:
            await deadlines.close()
    task = asyncio.current_task()
    if task is None:
        raise RuntimeError("a job runs inside an asyncio task")
    if timeout_s is not None:
        deadlines.watch(task, timeout_s)
    try:
        await _call(job, executor)
    except (asyncio.CancelledError, Exception) as exc:
        if deadlines.expired(task):
            task.uncancel()  # the cancellation was the timeout's, and it is handled here
            return _timed_out(job, timeout_s)
        if isinstance(exc, asyncio.CancelledError):
            raise  # a shutdown or a lost lease: the worker handles it
        return exc  # a handler's own TimeoutError (an HTTP call, say) stays its own
    finally:
        deadlines.unwatch(task)
    return None


async def _call(job: Job, executor: Executor | None) -> None:
    if is_async_handler(job):
        result = job.handle()
        if result is not None:
            await result
    else:
        # A thread cannot be stopped: on timeout the attempt fails, but the thread runs on.
        await asyncio.get_running_loop().run_in_executor(executor, job.handle)


def _timed_out(job: Job, timeout_s: float | None) -> JobTimeout:
    return JobTimeout(f"{type(job).job_name} ({job.job_id}) timed out after {timeout_s:g}s")


async def call_failed_hook(job: Job, error: BaseException) -> None:
    """Call the job's ``failed`` hook; its own errors are logged, never raised."""
    try:
        result = job.failed(error)
        if inspect.isawaitable(result):
            await result
    except Exception:
        log.exception("failed() hook of %s (%s) raised", type(job).job_name, job.job_id)


def log_attempt(attempt: Attempt, attempts: int) -> None:
    """The per-job line: status, job name, id, attempt, duration."""
    log.info(
        "%-5s %-32s %s #%d %9.2f ms",
        attempt.status,
        attempt.job_name,
        attempt.job_id,
        attempts,
        attempt.duration_s * 1000,
    )


async def run_now(
    raw: bytes, *, connection: str, queue: str, store: FailedJobStore, codec: Codec
) -> None:
    """Run a job once, here and now (the sync driver).

    On failure its hook is called and the failure recorded, then its error is raised. If the
    failure cannot be recorded (no ``failed_jobs`` table, database down), that is logged as a
    warning and the job's own error is still what the caller gets: code (and tests) that expect
    ``RuntimeError`` from a job must not get a storage error instead.
    """
    defaults = JobDefaults(tries=1, timeout_s=None)
    attempt = await run_attempt(raw, 1, defaults, codec=codec, only_try=True)
    log_attempt(attempt, 1)
    if attempt.error is None:
        return
    failure = FailedJob(attempt.job_id, connection, queue, raw, attempt.error_text())
    try:
        await asyncio.to_thread(store.record, failure)
    except RuneQueueError as exc:  # FailedStoreError, or a ConfigError (no database driver)
        problem = " ".join(str(exc).split())  # one line, whatever the database said
        log.warning(
            "job %s (%s) failed with %s and could not be recorded in failed_jobs: %s",
            attempt.job_name,
            attempt.job_id,
            type(attempt.error).__name__,
            problem,
        )
    raise attempt.error
