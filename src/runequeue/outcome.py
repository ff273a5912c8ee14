"""What an attempt comes to, beyond the try-count rule of `retry.decide`: what the job asked for
(`Job.release`, `Job.fail`), its ``retry_until`` deadline, and its ``max_exceptions``."""

from __future__ import annotations

import time

import msgspec

from runequeue.drivers.base import Limits
from runequeue.errors import ManuallyFailed, RetryDeadlinePassed
from runequeue.job import Backoff, FailRequest, Job, ReleaseRequest
from runequeue.payload import Envelope
from runequeue.retry import Ack, Decision, Fail, Release, decide

# How long a job's count of exceptions (`Job.max_exceptions`) is kept after its last one.
EXCEPTIONS_KEPT_S = 7 * 24 * 3600


def deadline_of(envelope: Envelope) -> float | None:
    """The job's ``retry_until`` deadline (epoch seconds), if it has one."""
    deadline = envelope.retry_until
    return None if isinstance(deadline, msgspec.UnsetType) else deadline


def past_deadline(envelope: Envelope) -> RetryDeadlinePassed | None:
    """The error of a job reached after its ``retry_until`` deadline (it does not run)."""
    deadline = deadline_of(envelope)
    if deadline is None or time.time() < deadline:
        return None
    return RetryDeadlinePassed(
        f"{envelope.job} ({envelope.id}) reached after its retry_until deadline; not run"
    )


async def decided(
    job: Job,
    envelope: Envelope,
    attempts: int,
    tries: int,
    backoff: Backoff,
    error: BaseException | None,
    limits: Limits | None,
    *,
    only_try: bool = False,
) -> tuple[Decision, BaseException | None]:
    """The attempt's decision, and its error (a `Job.fail` makes one). With ``only_try`` (the
    sync driver, a retried sync job) there is no retry, whatever ``retry_until`` says."""
    requested = job.requested
    if requested is not None and error is None:
        return _as_requested(job, requested)
    deadline = None if only_try else deadline_of(envelope)
    decision = decide(attempts, tries, backoff, error, deadline, time.time() if deadline else 0)
    if job.max_exceptions is not None and limits is not None:
        decision = await _bounded_exceptions(job, decision, error, limits)
    return decision, error


def _as_requested(
    job: Job, requested: ReleaseRequest | FailRequest
) -> tuple[Decision, BaseException | None]:
    if isinstance(requested, ReleaseRequest):
        return Release(requested.delay_s, refund=True), None
    reason = requested.reason
    if isinstance(reason, BaseException):
        return Fail(type(reason).__name__), reason
    text = reason or "the job failed itself"
    return Fail("failed by the job"), ManuallyFailed(f"{type(job).job_name} ({job.job_id}): {text}")


async def _bounded_exceptions(
    job: Job, decision: Decision, error: BaseException | None, limits: Limits
) -> Decision:
    """Fail a job at its ``max_exceptions``-th exception, tries left or not; its count is
    forgotten once it is done or failed."""
    key = f"exceptions:{job.job_id}"
    if isinstance(decision, Release) and error is not None:
        count, _ = await limits.hit(key, EXCEPTIONS_KEPT_S)
        if count < (job.max_exceptions or 0):
            return decision
        decision = Fail(f"failed after {count} exceptions (max_exceptions)")
    if isinstance(decision, Ack | Fail):
        await limits.clear(key)
    return decision
