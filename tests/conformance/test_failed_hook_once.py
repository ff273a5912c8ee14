"""The ``failed()`` hook of a job whose last lease expired is called by one worker only, even while
failed_jobs is away and every worker's sweep finds the job in the outbox again and again."""

from __future__ import annotations

import asyncio
from pathlib import Path

from runequeue import Queue, QueueConfig
from runequeue.drivers import open_driver
from runequeue.failed_store import FailedJobStore
from runequeue.worker import Worker
from tests.support.jobs import HookRaises, read_ledger
from tests.workers import failed_jobs, options, work


async def _workers_without_failed_jobs(config: QueueConfig, count: int, tmp_path: Path) -> None:
    """``count`` workers whose failed_jobs table does not exist, sweeping often for a second."""
    missing = FailedJobStore(f"sqlite:///{tmp_path / 'never-migrated.sqlite3'}")
    drivers = [open_driver(config) for _ in range(count)]
    settings = options(config, stop_when_empty=False, max_time_s=1.0, sweep_interval_s=0.05)
    try:
        workers = [
            Worker(driver, missing, settings, connection=config.driver) for driver in drivers
        ]
        await asyncio.gather(*(worker.run() for worker in workers))
    finally:
        for driver in drivers:
            await driver.close()
        missing.close()


def test_the_hook_runs_once_across_workers_during_a_failed_jobs_outage(
    backend: QueueConfig, tmp_path: Path
) -> None:
    ledger = tmp_path / "ledger"
    job_id = Queue.dispatch(backend, HookRaises(ledger=str(ledger)))

    async def take_and_vanish() -> None:  # a worker that died running its only try
        driver = open_driver(backend)
        try:
            await driver.reserve("default", 1, lease_s=0.1, default_tries=3)
        finally:
            await driver.close()

    asyncio.run(take_and_vanish())
    asyncio.run(asyncio.sleep(0.2))
    asyncio.run(_workers_without_failed_jobs(backend, 3, tmp_path))

    assert [row[0] for row in read_ledger(ledger)] == ["hook"]
    assert failed_jobs(backend) == []  # kept in the outbox meanwhile
    work(backend)  # failed_jobs is back
    (failure,) = failed_jobs(backend)
    assert failure.job_id == job_id and "LeaseExpired" in failure.exception
    assert [row[0] for row in read_ledger(ledger)] == ["hook"]  # not called again on record
