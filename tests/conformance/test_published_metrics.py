"""What workers publish for the dashboard, on every driver: a queue's jobs by state, per-minute
metrics summed across workers, the last jobs run, and expired values dropped."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from runequeue import Queue, QueueConfig
from runequeue.drivers.base import Driver, QueueCounts
from runequeue.metrics_history import merged, per_minute, quantile, read
from runequeue.recent_jobs import read as read_recent
from tests.conformance.test_contract import with_driver
from tests.support.jobs import AlwaysFails, Record
from tests.workers import run_worker


def test_counts_by_state(backend: QueueConfig, tmp_path: Path) -> None:
    ledger = str(tmp_path / "ledger")
    Queue.dispatch_many(backend, [Record(ledger), Record(ledger), Record(ledger)])
    Queue.dispatch(backend, Record(ledger), delay=60)

    async def check(driver: Driver) -> tuple[QueueCounts, int]:
        batch = await driver.reserve("default", 1, lease_s=30, default_tries=3)
        assert len(batch.jobs) == 1
        return await driver.counts("default"), await driver.size("default")

    counts, size = with_driver(backend, check)
    assert counts == QueueCounts(ready=2, delayed=1, reserved=1)
    assert counts.total == size == 4


def test_a_worker_publishes_its_minutes_and_its_last_jobs(
    backend: QueueConfig, tmp_path: Path
) -> None:
    ledger = str(tmp_path / "ledger")
    Queue.dispatch_many(backend, [Record(ledger) for _ in range(3)])
    Queue.dispatch(backend, AlwaysFails(ledger), tries=1)
    asyncio.run(run_worker(backend))  # until the queue is empty; it flushes as it stops

    async def published(driver: Driver) -> tuple[list, list]:  # type: ignore[type-arg]
        now = int(time.time() // 60)
        minutes = await read(driver.control(), first_minute=now - 5, last_minute=now)
        return minutes, await read_recent(driver.control(), "default")

    minutes, recent = with_driver(backend, published)
    now = int(time.time() // 60)
    totals = per_minute(minutes, now - 5, now)
    assert sum(t.done for t in totals) == 3 and sum(t.failed for t in totals) == 1
    run_time = merged(spread for minute in minutes for spread in minute.run)
    assert run_time.count == 4 and quantile(run_time, 0.5) is not None
    assert sorted(job.status for job in recent) == ["done", "done", "done", "failed"]
    failed = next(job for job in recent if job.status == "failed")
    assert failed.job == "tests.AlwaysFails" and "Boom: always fails" in failed.error
    assert "Traceback" in failed.error and '"ledger"' in failed.payload
    assert recent == sorted(recent, key=lambda job: job.finished_at, reverse=True)


def test_expired_values_are_purged(backend: QueueConfig) -> None:
    async def check(driver: Driver) -> dict[str, str]:
        control = driver.control()
        await control.put("minutes:1", "a", "1", ttl_s=0.2)
        await control.put("minutes:1", "b", "2", ttl_s=60)
        await asyncio.sleep(0.4)
        await control.purge_expired()
        return await control.get_all("minutes:1")

    assert with_driver(backend, check) == {"b": "2"}


def test_big_errors_and_long_queue_names_fit(backend: QueueConfig, tmp_path: Path) -> None:
    """Fifty failures with 3 KB payloads and long tracebacks on a 100-character queue name: the
    stored list is cut to fit every backend (MySQL's TEXT holds 64 KiB), newest kept."""
    queue = "q" * 100
    ledger = str(tmp_path / "l" / ("x" * 3000))
    Queue.dispatch_many(backend, [AlwaysFails(ledger) for _ in range(50)], queue=queue, tries=1)
    asyncio.run(run_worker(backend, queues=(queue,), concurrency=10))

    recent = with_driver(backend, lambda driver: read_recent(driver.control(), queue))
    assert 5 <= len(recent) <= 50 and all(job.status == "failed" for job in recent)
