"""Dispatch and process through a real Redis, with an in-process worker."""

from __future__ import annotations

import asyncio
from pathlib import Path

import redis

from runequeue import Queue, QueueConfig
from runequeue.drivers.redis import QueueKeys
from tests.support.jobs import (
    AlwaysFails,
    FlakyThenOk,
    HookRaises,
    Record,
    Sleepy,
    read_ledger,
)
from tests.workers import failed_jobs, work


def events(ledger: Path) -> list[str]:
    return [row[0] for row in read_ledger(ledger)]


def test_dispatch_async_and_queue_override(config: QueueConfig, tmp_path: Path) -> None:
    ledger = tmp_path / "ledger"

    async def dispatch() -> str:
        job_id = await Queue.dispatch_async(config, Record(ledger=str(ledger)), queue="emails")
        await Queue.aclose_connections()
        return job_id

    job_id = asyncio.run(dispatch())
    assert Queue.size(config, "emails") == 1
    assert Queue.size(config) == 0
    work(config, queues=("emails",))
    assert [row[1] for row in read_ledger(ledger)] == [job_id]


def test_retry_exhaustion_calls_the_hook_and_records_the_failure(
    config: QueueConfig, tmp_path: Path
) -> None:
    ledger = tmp_path / "ledger"
    job_id = Queue.dispatch(config, AlwaysFails(ledger=str(ledger)))

    work(config)

    assert events(ledger) == ["start", "start", "hook:Boom"]
    (failure,) = failed_jobs(config)
    assert failure.job_id == job_id
    assert failure.queue == "default"
    assert failure.connection == "redis"
    assert failure.exception.startswith("tests.support.jobs.Boom: always fails")
    assert "Traceback" in failure.exception
    assert b'"job":"tests.AlwaysFails"' in failure.payload
    assert Queue.size(config) == 0


def test_backoff_delays_the_retry(config: QueueConfig, tmp_path: Path) -> None:
    ledger = tmp_path / "ledger"
    Queue.dispatch(config, FlakyThenOk(ledger=str(ledger), fail_times=1), backoff=30)

    work(config)  # stops when the ready queue is empty; the retry is 30 s away

    assert events(ledger) == ["start"]
    client = redis.Redis.from_url(config.redis_url)
    keys = QueueKeys.of(config.redis_prefix, "default")
    assert client.zcard(keys.delayed) == 1
    client.close()


def test_failing_hook_is_logged_and_the_job_still_lands(
    config: QueueConfig, tmp_path: Path
) -> None:
    ledger = tmp_path / "ledger"
    job_id = Queue.dispatch(config, HookRaises(ledger=str(ledger)))
    work(config)
    assert events(ledger) == ["hook"]
    assert [f.job_id for f in failed_jobs(config)] == [job_id]


def test_timeout_fails_the_attempt(config: QueueConfig, tmp_path: Path) -> None:
    ledger = tmp_path / "ledger"
    job_id = Queue.dispatch(config, Sleepy(ledger=str(ledger), seconds=30), timeout=0.3, tries=1)

    work(config)

    assert events(ledger) == ["start"]
    (failure,) = failed_jobs(config)
    assert failure.job_id == job_id
    assert failure.exception.startswith("runequeue.errors.JobTimeout")
