"""Job middleware, ``release``/``fail`` from a job, ``retry_until`` and ``max_exceptions``, on
every driver: the limits live in the backend, so they hold across workers."""

from __future__ import annotations

import time
from pathlib import Path

from runequeue import Queue, QueueConfig
from tests.support.jobs import (
    BehindBrokenMiddleware,
    BoundedExceptions,
    CallsDownService,
    Exclusive,
    FailsItself,
    MaybeSkipped,
    RateLimitedCall,
    ReleasesItself,
    RetriedUntil,
    read_ledger,
)
from tests.workers import failed_jobs, work


def rows(ledger: Path) -> list[tuple[str, str, int, int]]:
    return read_ledger(ledger)


def work_until_empty(config: QueueConfig, seconds: float = 20, **overrides: object) -> None:
    """Work until no job is left, delayed ones included (a worker stopping when empty stops
    while released jobs wait out their delay)."""
    deadline = time.monotonic() + seconds
    while Queue.size(config) and time.monotonic() < deadline:
        work(config, **overrides)
        time.sleep(0.05)
    assert Queue.size(config) == 0


def test_rate_limited_jobs_over_the_limit_are_released_without_counting_the_attempt(
    backend: QueueConfig, tmp_path: Path
) -> None:
    ledger = tmp_path / "ledger"
    key = f"api-{tmp_path.name}"
    Queue.dispatch_many(backend, [RateLimitedCall(str(ledger), key, 1.0) for _ in range(5)])

    work(backend, concurrency=1)
    assert len(rows(ledger)) == 2  # two per window
    assert Queue.size(backend) == 3  # the rest wait for the next window, not failed

    work_until_empty(backend, concurrency=1)
    ran = rows(ledger)
    assert len(ran) == 5 and not failed_jobs(backend)
    # One try each, yet released ones ran: their releases did not count as attempts.
    assert {attempt for _, _, attempt, _ in ran} == {1}


def test_without_overlapping_runs_one_job_per_key_at_a_time(
    backend: QueueConfig, tmp_path: Path
) -> None:
    ledger = tmp_path / "ledger"
    Queue.dispatch_many(backend, [Exclusive(str(ledger)) for _ in range(3)])

    work_until_empty(backend, concurrency=3)

    events = [event for event, *_ in rows(ledger)]
    assert events == ["start", "done"] * 3  # never two started before one was done
    assert not failed_jobs(backend)


def test_throttled_exceptions_hold_the_job_back_instead_of_burning_tries(
    backend: QueueConfig, tmp_path: Path
) -> None:
    ledger = tmp_path / "ledger"
    Queue.dispatch(backend, CallsDownService(str(ledger)))

    work(backend, concurrency=1)

    assert [event for event, *_ in rows(ledger)] == ["call", "call"]  # then held back
    assert Queue.size(backend) == 1 and not failed_jobs(backend)


def test_skip_and_a_broken_middleware(backend: QueueConfig, tmp_path: Path) -> None:
    ledger = tmp_path / "ledger"
    Queue.dispatch(backend, MaybeSkipped(str(ledger), skip=True))
    skipped_not = Queue.dispatch(backend, MaybeSkipped(str(ledger), skip=False))
    broken = Queue.dispatch(backend, BehindBrokenMiddleware(str(ledger)))

    work(backend)

    assert [(event, job_id) for event, job_id, *_ in rows(ledger)] == [("ran", skipped_not)]
    (failed,) = failed_jobs(backend)
    assert failed.job_id == broken
    assert "the middleware itself breaks" in failed.exception
    assert Queue.size(backend) == 0


def test_a_job_can_release_itself_without_spending_tries(
    backend: QueueConfig, tmp_path: Path
) -> None:
    ledger = tmp_path / "ledger"
    Queue.dispatch(backend, ReleasesItself(str(ledger), times=3))

    work_until_empty(backend)

    assert [(event, attempt) for event, _, attempt, _ in rows(ledger)] == [("ran", 1)] * 3
    assert not failed_jobs(backend)


def test_a_job_can_fail_itself_for_good_at_once(backend: QueueConfig, tmp_path: Path) -> None:
    ledger = tmp_path / "ledger"
    job_id = Queue.dispatch(backend, FailsItself(str(ledger)))

    work(backend)

    assert [event for event, *_ in rows(ledger)] == ["ran", "hook:ManuallyFailed"]
    (failed,) = failed_jobs(backend)
    assert failed.job_id == job_id and "the input is bad" in failed.exception


def test_retry_until_retries_past_the_default_tries_until_its_deadline(
    backend: QueueConfig, tmp_path: Path
) -> None:
    ledger = tmp_path / "ledger"
    started = time.time()
    job_id = Queue.dispatch(backend, RetriedUntil(str(ledger), seconds=1.0))

    work_until_empty(backend, concurrency=1, tries=2)

    runs = rows(ledger)
    assert len(runs) > 2  # more than the worker's --tries
    (failed,) = failed_jobs(backend)
    assert failed.job_id == job_id
    assert time.time() - started >= 1.0


def test_max_exceptions_fails_the_job_with_tries_left(backend: QueueConfig, tmp_path: Path) -> None:
    ledger = tmp_path / "ledger"
    job_id = Queue.dispatch(backend, BoundedExceptions(str(ledger)))

    work_until_empty(backend, concurrency=1)

    assert len(rows(ledger)) == 2
    (failed,) = failed_jobs(backend)
    assert failed.job_id == job_id
