"""Running one attempt of one job: decode -> build -> handle under a timeout -> decide.

Shared by the worker and the sync driver, so a job that cannot be stored or rebuilt fails the same
way in development as in production.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
import traceback
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Literal

from runequeue import chains, events, failed_hook, middleware, outcome, payload
from runequeue import job as job_registry
from runequeue.deadlines import TICK_S, Deadlines
from runequeue.drivers.base import BatchStore, Limits, Outgoing
from runequeue.errors import JobTimeout, PayloadError, RuneQueueError, UnknownJob
from runequeue.job import Backoff, Job, is_async_handler
from runequeue.job_batch import JobBatch
from runequeue.logs import log_line
from runequeue.payload import Codec, Envelope, UniqueLock
from runequeue.retry import (
    UNKNOWN_JOB_GRACE_S,
    Ack,
    Decision,
    Defer,
    Fail,
    Release,
    decide,
    defer_unknown,
)
from runequeue.text import one_line, safe_str
from runequeue.threads import DaemonThreadPool

if TYPE_CHECKING:
    pass

log = logging.getLogger("runequeue.worker")

# Frees a unique job's lock: ``(queue, key, job id)`` (`Driver.unlock`).
Unlock = Callable[[str, str, str], Awaitable[None]]

Status = Literal["DONE", "RETRY", "BACK", "FAIL", "WAIT"]
DEFAULT_CODEC = Codec()
# How long past its timeout a job may end without the deadline ticker having stopped it: the
# ticker is at most `TICK_S` late, so more than twice that means the event loop was held up.
BLOCKED_MARGIN_S = 2 * TICK_S
ERROR_SUMMARY_CHARS = 200


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
    # Jobs to store in the same atomic step as this outcome: a chain's next step after a success,
    # its catch job after a failure for good (see `chains`).
    then: tuple[Outgoing, ...] = ()
    # A unique job's lock, to free once it is done or failed for good (unless it was freed when
    # the handler started).
    unique: UniqueLock | None = None
    # The batch whose counters this outcome moves (not a callback's: it is not counted).
    batch: str | None = None
    waited_s: float = 0.0  # from dispatch to this attempt's start (metrics)

    @property
    def status(self) -> Status:
        if isinstance(self.decision, Ack):
            return "DONE"
        if isinstance(self.decision, Defer):
            return "WAIT"
        if isinstance(self.decision, Release):
            return "BACK" if self.decision.refund else "RETRY"
        return "FAIL"

    def error_text(self) -> str:
        """The error as stored in the failed-job store: type, message and traceback."""
        if self.error is None:
            return ""
        return describe_error(self.error)


def describe_error(error: BaseException) -> str:
    kind = type(error)
    lines = traceback.format_exception(error)  # copes with a __str__ that raises by itself
    return f"{kind.__module__}.{kind.__qualname__}: {safe_str(error)}\n\n{''.join(lines)}"


def error_summary(error: BaseException) -> str:
    """``ExcType: message`` on one line of at most `ERROR_SUMMARY_CHARS`, for the log lines.

    Builtin types go without their module (``RuntimeError``); others keep it, so a user can tell
    their own ``Boom`` from a library's.
    """
    kind = type(error)
    name = kind.__qualname__
    if kind.__module__ != "builtins":
        name = f"{kind.__module__}.{name}"
    message = one_line(error)
    text = f"{name}: {message}" if message else name
    if len(text) > ERROR_SUMMARY_CHARS:
        text = text[: ERROR_SUMMARY_CHARS - 1] + "…"
    return text


async def run_attempt(
    raw: bytes,
    attempts: int,
    defaults: JobDefaults,
    threads: DaemonThreadPool | None = None,
    *,
    codec: Codec = DEFAULT_CODEC,
    only_try: bool = False,
    deadlines: Deadlines | None = None,
    defer_unknown_jobs: bool = False,
    unlock: Unlock | None = None,
    batches: Callable[[], BatchStore] | None = None,
    limits: Limits | None = None,
) -> Attempt:
    """Run attempt number ``attempts`` of the stored job ``raw``.

    Job errors never escape: they become the attempt's decision, ``SystemExit`` and
    ``KeyboardInterrupt`` from a handler included. ``asyncio.CancelledError`` does escape (the
    worker cancels a job on shutdown or when its lease is lost). With ``defer_unknown_jobs`` (a
    worker), a job whose class is not registered here is put back while it is young (`Defer`).
    ``batches`` opens the backend's batches, for a batched job's ``self.batch``; ``limits`` are
    the backend's counters and locks, for job middleware and ``max_exceptions``.
    """
    started = time.perf_counter()
    started_at = time.time()
    try:
        envelope = codec.decode(raw)
    except PayloadError as exc:
        return await _undecodable(raw, attempts, exc, started)
    try:
        job = payload.build_job(envelope, attempt=attempts)
    except PayloadError as exc:
        return await _unbuilt(envelope, attempts, exc, started, codec, defer_unknown_jobs)
    if envelope.batch and batches is not None:
        job.batch = JobBatch(envelope.batch.id, envelope.queue, batches(), codec)
    unique = await _starting(job, envelope, attempts, unlock)

    tries = envelope.max_tries if envelope.max_tries is not None else defaults.tries
    if only_try:
        tries = 1
    timeout_s = envelope.timeout if envelope.timeout is not None else defaults.timeout_s
    backoff = envelope.backoff if envelope.backoff is not None else defaults.backoff
    error = await _run(job, envelope, timeout_s, threads, deadlines, limits)
    duration_s = time.perf_counter() - started
    if timeout_s is not None and duration_s > timeout_s:  # (a success does no arithmetic)
        _warn_not_stopped(job, duration_s, timeout_s, error)
    decision, error = await _decide(job, envelope, attempts, tries, backoff, error, limits,
                                    only_try)  # fmt: skip
    if isinstance(decision, Fail) and error is not None:
        await failed_hook.call_failed_hook(job, error, timeout_s=timeout_s, threads=threads)
        duration_s = time.perf_counter() - started
    # (UNSET, a plain job's, is false: a job outside a chain makes no call for it)
    then = chains.followers(envelope, decision, codec) if envelope.chain else ()
    if events.any_listener():
        await _announce(decision, job, envelope, attempts, error, duration_s)
    batch = _counted_batch(envelope)
    waited_s = started_at - envelope.created_at
    return Attempt(decision, envelope.job, envelope.id, error, duration_s, then, unique, batch,
                   waited_s)  # fmt: skip


async def _run(
    job: Job,
    envelope: Envelope,
    timeout_s: float | None,
    threads: DaemonThreadPool | None,
    deadlines: Deadlines | None,
    limits: Limits | None,
) -> BaseException | None:
    """Run the job's handler, unless its ``retry_until`` deadline has passed; its error."""
    late = outcome.past_deadline(envelope) if envelope.retry_until else None
    if late is not None:
        return late
    return await _handle(job, timeout_s, threads, deadlines, limits)


async def _decide(
    job: Job,
    envelope: Envelope,
    attempts: int,
    tries: int,
    backoff: Backoff,
    error: BaseException | None,
    limits: Limits | None,
    only_try: bool,
) -> tuple[Decision, BaseException | None]:
    if job.requested is None and not envelope.retry_until and job.max_exceptions is None:
        return decide(attempts, tries, backoff, error), error  # the common case, kept lean
    return await outcome.decided(job, envelope, attempts, tries, backoff, error, limits,
                                 only_try=only_try)  # fmt: skip


def _counted_batch(envelope: Envelope) -> str | None:
    """The id of the batch whose counters the job's outcome moves, if any."""
    ref = envelope.batch
    return ref.id if ref and ref.counted else None


async def _undecodable(raw: bytes, attempts: int, error: PayloadError, started: float) -> Attempt:
    # Invariant 4: a payload that cannot become a job is failed at once, never retried (the one
    # exception, a job class not deployed here yet, is `_unbuildable`'s).
    job_id = payload.peek_id(raw) or "?"
    if events.listening(events.JobFailed):
        name = payload.peek_name(raw) or "?"
        await events.emit_async(events.JobFailed(job_id, name, None, "?", attempts, error))
    return Attempt(Fail(type(error).__name__), "?", job_id, error, time.perf_counter() - started)


async def _unbuilt(
    envelope: Envelope,
    attempts: int,
    error: PayloadError,
    started: float,
    codec: Codec,
    defer_unknown_jobs: bool,
) -> Attempt:
    """The attempt of an envelope whose job cannot be built (unknown class, invalid data)."""
    decision = _unbuildable(envelope, error, defer_unknown_jobs)
    then = chains.followers(envelope, decision, codec)
    if isinstance(decision, Fail) and events.listening(events.JobFailed):
        failed = events.JobFailed(envelope.id, envelope.job, None, envelope.queue, attempts, error)
        await events.emit_async(failed)
    duration_s = time.perf_counter() - started
    unique = envelope.unique or None
    batch = _counted_batch(envelope)
    return Attempt(decision, envelope.job, envelope.id, error, duration_s, then, unique, batch)


async def _starting(
    job: Job, envelope: Envelope, attempts: int, unlock: Unlock | None
) -> UniqueLock | None:
    """Before the handler: `JobProcessing`, and a ``unique_until = "processing"`` job's lock
    freed. Returns the lock still to free once the job is done."""
    if events.listening(events.JobProcessing):
        await events.emit_async(events.JobProcessing(job, envelope.queue, attempts))
    unique = envelope.unique or None
    if unique is not None and unique.until_processing:
        await _free_lock(unlock, envelope, unique)
        return None
    return unique


async def _free_lock(unlock: Unlock | None, envelope: Envelope, unique: UniqueLock) -> None:
    """Free a ``unique_until = "processing"`` job's lock as its handler starts."""
    if unlock is None:
        return  # run outside a worker (the sync driver): no lock was taken
    try:
        await unlock(envelope.queue, unique.key, envelope.id)
    except RuneQueueError as exc:
        log.warning("could not free the unique lock of %s (%s); it expires by itself: %s",
                    envelope.job, envelope.id, exc)  # fmt: skip


async def _announce(
    decision: Decision,
    job: Job,
    envelope: Envelope,
    attempts: int,
    error: BaseException | None,
    duration_s: float,
) -> None:
    """The event of an attempt's outcome, to whoever listens for it."""
    queue = envelope.queue
    event: events.Event | None = None
    if isinstance(decision, Ack):
        event = events.JobProcessed(job, queue, attempts, duration_s)
    elif isinstance(decision, Release) and error is not None:
        event = events.JobRetrying(job, queue, attempts, error, decision.delay_s)
    elif isinstance(decision, Fail) and error is not None:
        event = events.JobFailed(envelope.id, envelope.job, job, queue, attempts, error)
    if event is not None and events.listening(type(event)):
        await events.emit_async(event)


def unexpected_failure(raw: bytes, error: BaseException) -> Attempt:
    """The attempt of a job whose run raised where no job error is expected (a bug of ours, or a
    user's object that breaks a rule): it fails with that error, so it is kept, never a zombie."""
    job_id = payload.peek_id(raw) or "?"
    return Attempt(Fail(type(error).__name__), payload.peek_name(raw) or "?", job_id, error, 0.0)


def _unbuildable(envelope: Envelope, error: PayloadError, defer_unknown_jobs: bool) -> Decision:
    """Fail a job that cannot be built, unless its class may just not be deployed here yet."""
    # UnknownJob is also raised for a registered class that is not a dataclass: a bug, not a
    # deploy in progress, so only a name nothing is registered under is waited for.
    if (
        defer_unknown_jobs
        and isinstance(error, UnknownJob)
        and not job_registry.is_registered(envelope.job)
    ):
        deferred = defer_unknown(envelope.created_at, time.time())
        if deferred is not None:
            return deferred
    return Fail(type(error).__name__)


def _warn_not_stopped(
    job: Job, duration_s: float, timeout_s: float, error: BaseException | None
) -> None:
    """Warn that a handler outlived its timeout: the ticker could not run, so the event loop was
    blocked (timeouts only interrupt a handler at an ``await``)."""
    if isinstance(error, JobTimeout) or duration_s <= timeout_s + BLOCKED_MARGIN_S:
        return  # stopped by its timeout, or ended before the ticker's next look
    log.warning(
        "%s (%s) ran %.2fs, past its %gs timeout, without being stopped: something blocked the "
        "event loop (this handler or one running beside it), which holds up every job of this "
        "worker. Timeouts interrupt an async handler only where it awaits; move CPU-bound or "
        "blocking work to a plain `def handle` (run in a thread) or a process pool",
        type(job).job_name, job.job_id, duration_s, timeout_s,
    )  # fmt: skip


async def _handle(
    job: Job,
    timeout_s: float | None,
    threads: DaemonThreadPool | None,
    deadlines: Deadlines | None,
    limits: Limits | None = None,
) -> BaseException | None:
    """Run the handler, through the job's middleware if it has any; past ``timeout_s``,
    ``deadlines`` cancels it. That is the worker's shared ticker, or, for a job run on its own
    (the sync driver), a ticker of the job's own."""
    if deadlines is None:
        deadlines = Deadlines()
        try:
            return await _handle(job, timeout_s, threads, deadlines, limits)
        finally:
            await deadlines.close()
    task = asyncio.current_task()
    if task is None:
        raise RuntimeError("a job runs inside an asyncio task")
    clock = _Deadline(deadlines, task, timeout_s)

    async def handler() -> None:
        if is_async_handler(job):
            clock.start()
            result = job.handle()
            if result is not None:
                await result
        else:
            await _in_thread(job, threads, clock)

    try:
        if type(job).middleware is Job.middleware:  # (a job without middleware pays a compare)
            await handler()
        else:
            await _through_middleware(job, handler, clock, limits)
    except BaseException as exc:  # SystemExit and KeyboardInterrupt end the job, not the worker
        if deadlines.expired(task):
            task.uncancel()  # the cancellation was the timeout's, and it is handled here
            return _timed_out(job, timeout_s)
        if isinstance(exc, asyncio.CancelledError):
            raise  # a shutdown or a lost lease: the worker handles it
        return exc  # a handler's own TimeoutError (an HTTP call, say) stays its own
    finally:
        clock.stop()
    return None


async def _through_middleware(
    job: Job, handler: middleware.Next, clock: _Deadline, limits: Limits | None
) -> None:
    """Run ``handler`` through ``job.middleware()``, with the backend's `Limits` at hand. The
    timeout counts from the first middleware: they are part of the attempt."""
    clock.start()
    token = middleware.using_limits(limits) if limits is not None else None
    try:
        await middleware.through(job, job.middleware(), handler)()
    finally:
        if token is not None:
            middleware.reset_limits(token)


class _Deadline:
    """One attempt's timeout, started when its handler starts: for a thread job that is when a
    thread takes it, not when it was handed to the pool, so waiting for a thread costs no time."""

    def __init__(self, deadlines: Deadlines, task: asyncio.Task[object], timeout_s: float | None):
        self._deadlines = deadlines
        self._task = task
        self._timeout_s = timeout_s
        self._over = False
        self._started = False

    def start(self) -> None:
        # Called on the event loop (from a thread, through call_soon_threadsafe); an attempt
        # that already ended (cancelled while it waited for a thread) is not watched again, nor
        # one started already (by its first middleware).
        if self._timeout_s is not None and not self._over and not self._started:
            self._started = True
            self._deadlines.watch(self._task, self._timeout_s)

    def stop(self) -> None:
        self._over = True
        self._deadlines.unwatch(self._task)


async def _in_thread(job: Job, threads: DaemonThreadPool | None, clock: _Deadline) -> None:
    loop = asyncio.get_running_loop()

    def handle() -> None:
        # Scheduled before the handler runs, so it reaches the loop before the call's result.
        loop.call_soon_threadsafe(clock.start)
        job.handle()

    if threads is None:
        await loop.run_in_executor(None, handle)
        return
    call = threads.submit(handle)
    try:
        await asyncio.wrap_future(call)
    except asyncio.CancelledError:
        # Timed out, shut down or lease lost: the attempt is over, but a thread cannot be
        # stopped. Its thread stops counting against the pool, so the next job gets one.
        threads.abandon(call)
        raise


def _timed_out(job: Job, timeout_s: float | None) -> JobTimeout:
    return JobTimeout(f"{type(job).job_name} ({job.job_id}) timed out after {timeout_s:g}s")


def log_attempt(attempt: Attempt, attempts: int) -> None:
    """The per-job line: status, job name, id, attempt, duration; and why, if it did not succeed.

    A success costs what it always did (the hot path): the error's summary, and its traceback
    at DEBUG, are built only for RETRY, FAIL and WAIT lines.
    """
    error = attempt.error
    if error is None:  # done, or put back by the job itself (a middleware's limit, say)
        log_line(log, logging.INFO, "%-5s %-32s %s #%d %9.2f ms%s", attempt.status,
                 attempt.job_name, attempt.job_id, attempts, attempt.duration_s * 1000,
                 f"  released for {attempt.decision.delay_s:g}s, attempt not counted"
                 if isinstance(attempt.decision, Release) else "")  # fmt: skip
        return
    status = attempt.status
    if status == "WAIT":
        _log_unknown_job_deferred(attempt, attempts)
        return
    log_line(log, logging.INFO, "%-5s %-32s %s #%d %9.2f ms  %s", status, attempt.job_name,
             attempt.job_id, attempts, attempt.duration_s * 1000, error_summary(error))  # fmt: skip
    if log.isEnabledFor(logging.DEBUG):
        log.debug("%s %s #%d raised:", attempt.job_name, attempt.job_id, attempts, exc_info=error)


def _log_unknown_job_deferred(attempt: Attempt, attempts: int) -> None:
    assert isinstance(attempt.decision, Defer)
    log.warning(
        "%-5s %-32s %s #%d  no job class is registered as %r in this worker; put back for %gs "
        "(attempt given back), and failed as UnknownJob once %g minutes old. Name the module "
        "that defines it with --import or RUNE_IMPORTS, and deploy new job classes to the "
        "workers before dispatching them",
        attempt.status, attempt.job_name, attempt.job_id, attempts, attempt.job_name,
        attempt.decision.delay_s, UNKNOWN_JOB_GRACE_S / 60,
    )  # fmt: skip
