"""What happens after an attempt: a pure function of attempts, options and the error."""

from __future__ import annotations

import dataclasses

from runequeue.job import Backoff


@dataclasses.dataclass(frozen=True, slots=True)
class Ack:
    """The job succeeded: delete it."""


@dataclasses.dataclass(frozen=True, slots=True)
class Release:
    """The attempt failed and tries remain: run it again after ``delay_s``."""

    delay_s: float


@dataclasses.dataclass(frozen=True, slots=True)
class Fail:
    """The job failed for good: call its ``failed`` hook and record it in the failed-job store."""

    reason: str


Decision = Ack | Release | Fail


def backoff_delay(backoff: Backoff, attempts: int) -> float:
    """Seconds to wait before the next try after ``attempts`` failed ones.

    A list gives the delay after the first, second, ... failure and repeats its last entry.
    """
    if isinstance(backoff, int | float):
        return float(backoff)
    if not backoff:
        return 0.0
    return float(backoff[min(max(attempts, 1), len(backoff)) - 1])


def decide(attempts: int, tries: int, backoff: Backoff, error: BaseException | None) -> Decision:
    """Ack on success; release with backoff while ``attempts < tries``; fail after that."""
    if error is None:
        return Ack()
    if attempts < tries:
        return Release(backoff_delay(backoff, attempts))
    return Fail(f"failed after {attempts} attempt{'s' if attempts != 1 else ''}")
