"""Several worker processes on one database never take the same job, and SQLite's locking never
reaches a job as an error."""

from __future__ import annotations

from pathlib import Path

import pytest

from runequeue import Queue, QueueConfig
from tests.support.jobs import Sleepy, read_ledger
from tests.workers import failed_jobs, spawn_worker

JOBS = 120
WORKERS = 3


@pytest.mark.parametrize("kind", ["sqlite", "postgresql", "mysql"])
def test_competing_workers_run_each_job_once(
    kind: str, database_url_for: object, tmp_path: Path
) -> None:
    url = database_url_for(kind)  # type: ignore[operator]
    config = QueueConfig(driver="database", database_url=url)
    ledger = tmp_path / "ledger"
    # Long enough (about 3 s of work for one worker) that every worker gets a share.
    jobs = [Sleepy(ledger=str(ledger), seconds=0.05) for _ in range(JOBS)]
    ids = Queue.dispatch_many(config, jobs)

    workers = [
        spawn_worker(config, "--stop-when-empty", "--concurrency", "2", log=tmp_path / f"w{n}.log")
        for n in range(WORKERS)
    ]
    try:
        assert [worker.wait(timeout=120) for worker in workers] == [0] * WORKERS
    finally:
        for worker in workers:
            worker.kill()

    ran = [job_id for event, job_id, _, _ in read_ledger(ledger) if event == "start"]
    assert sorted(ran) == sorted(ids)  # every job once: none lost, none twice
    assert failed_jobs(config) == []
    assert len({pid for _, _, _, pid in read_ledger(ledger)}) > 1  # the work really was shared
    logs = "".join((tmp_path / f"w{n}.log").read_text() for n in range(WORKERS))
    assert "FAIL" not in logs
