"""What happens after an attempt: a pure function of attempts, options and the error."""

from __future__ import annotations

import dataclasses

from runequeue.job import Backoff


@dataclasses.dataclass(frozen=True, slots=True)
class Ack:
    """The job succeeded: delete it."""


@dataclasses.dataclass(frozen=True, slots=True)
class Release:
    """The attempt failed and tries remain: run it again after ``delay_s``. Or the job asked to
    be put back (`Job.release`, a middleware's limit): then its attempt is ``refund``ed."""

    delay_s: float
    refund: bool = False


@dataclasses.dataclass(frozen=True, slots=True)
class Fail:
    """The job failed for good: call its ``failed`` hook and record it in the failed-job store."""

    reason: str


@dataclasses.dataclass(frozen=True, slots=True)
class Defer:
    """The job cannot run in this worker yet (its class is unknown here): put it back after
    ``delay_s`` and give the attempt back, as a worker does on shutdown."""

    delay_s: float


Decision = Ack | Release | Fail | Defer

# A job whose name no class is registered under is put back, not failed, while it is younger than
# this: new jobs dispatched before every worker runs the code that defines them (a deploy-order
# mistake) wait for it instead of being burnt. After that it fails as UnknownJob.
UNKNOWN_JOB_GRACE_S = 600.0
UNKNOWN_JOB_DELAY_S = 10.0
# A dispatch time further ahead than this is not a clock difference between machines: such a job
# gets no grace (else its grace would never end).
CLOCK_SKEW_S = 60.0


def backoff_delay(backoff: Backoff, attempts: int) -> float:
    """Seconds to wait before the next try after ``attempts`` failed ones.

    A list gives the delay after the first, second, ... failure and repeats its last entry.
    """
    if isinstance(backoff, int | float):
        return float(backoff)
    if not backoff:
        return 0.0
    return float(backoff[min(max(attempts, 1), len(backoff)) - 1])


def decide(
    attempts: int,
    tries: int,
    backoff: Backoff,
    error: BaseException | None,
    retry_until: float | None = None,
    now: float = 0.0,
) -> Decision:
    """Ack on success; release with backoff while ``attempts < tries`` (or, for a job with a
    ``retry_until`` deadline, while ``now`` is before it); fail after that."""
    if error is None:
        return Ack()
    if attempts < tries if retry_until is None else now < retry_until:
        return Release(backoff_delay(backoff, attempts))
    if retry_until is not None:
        return Fail(f"failed after its retry_until deadline ({attempts} attempts)")
    return Fail(f"failed after {attempts} attempt{'s' if attempts != 1 else ''}")


def defer_unknown(created_at: float, now: float) -> Defer | None:
    """Put back a job whose class is unknown while it is under `UNKNOWN_JOB_GRACE_S` old; ``None``
    once it is older (or its dispatch time is not believable): then it fails."""
    age = now - created_at
    if -CLOCK_SKEW_S <= age < UNKNOWN_JOB_GRACE_S:
        return Defer(UNKNOWN_JOB_DELAY_S)
    return None
