"""Plain ``def handle`` jobs run in threads, and a thread cannot be stopped: a timed-out one must
neither starve the jobs behind it nor go unnoticed."""

from __future__ import annotations

from pathlib import Path

from runequeue import Queue, QueueConfig
from runequeue.worker import EXIT_THREADS_STUCK
from tests.support.jobs import HangsInThread, RecordInThreadOnce, read_ledger
from tests.workers import failed_jobs, work


def test_timed_out_threads_do_not_starve_the_jobs_behind_them(
    backend: QueueConfig, tmp_path: Path
) -> None:
    ledger = tmp_path / "ledger"
    hung = [Queue.dispatch(backend, HangsInThread(ledger=str(ledger), seconds=3)) for _ in range(2)]
    quick = [Queue.dispatch(backend, RecordInThreadOnce(ledger=str(ledger))) for _ in range(3)]

    worker = work(backend, concurrency=3)

    failed = {job.job_id: job.exception for job in failed_jobs(backend)}
    assert sorted(failed) == sorted(hung)  # the two that hung timed out; nothing else did
    assert all("JobTimeout" in text for text in failed.values())
    assert sorted(row[1] for row in read_ledger(ledger) if row[0] == "ran") == sorted(quick)
    assert worker.exit_code == 0  # 2 stuck threads at concurrency 3: not yet too many


def test_a_worker_whose_threads_are_all_stuck_stops_and_says_so(
    backend: QueueConfig, tmp_path: Path
) -> None:
    ledger = tmp_path / "ledger"
    for _ in range(2):
        Queue.dispatch(backend, HangsInThread(ledger=str(ledger), seconds=3))
    waiting = [Queue.dispatch(backend, RecordInThreadOnce(ledger=str(ledger))) for _ in range(3)]

    worker = work(backend, concurrency=1)

    assert worker.exit_code == EXIT_THREADS_STUCK
    assert Queue.size(backend) == 1 + len(waiting)  # not taken: left for a fresh worker
    assert not read_ledger(ledger) or all(row[0] == "start" for row in read_ledger(ledger))
