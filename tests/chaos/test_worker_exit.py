"""A worker exits when it says it stopped, even while a timed-out thread runs (issue 10, item 6).

A plain ``def handle`` runs in a thread, and a thread cannot be stopped: on timeout the attempt
fails and the thread is abandoned. It must not keep the process alive after "worker stopped".
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from runequeue import Queue, QueueConfig
from tests.support.jobs import SleepsInThreadPastTimeout, read_ledger
from tests.workers import failed_jobs, spawn_worker, wait_until

HUNG_S = 30.0  # far longer than the wait below: an exit in time cannot be the thread ending


def test_a_worker_exits_without_waiting_for_an_abandoned_thread(
    sqlite_url: str, tmp_path: Path
) -> None:
    config = QueueConfig(driver="database", database_url=sqlite_url)
    ledger = tmp_path / "ledger"
    job_id = Queue.dispatch(config, SleepsInThreadPastTimeout(ledger=str(ledger), seconds=HUNG_S))
    log = tmp_path / "worker.log"

    worker = spawn_worker(config, "--stop-when-empty", log=log)
    try:
        wait_until(lambda: "worker stopped" in log.read_text(), 30, "the worker to stop")
        try:
            code = worker.wait(timeout=5)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                "the worker said it stopped but is still running:\n" + log.read_text()
            ) from None
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()

    text = log.read_text()
    assert code == 0, text
    assert [row[0] for row in read_ledger(ledger)] == ["start"]  # the thread never finished
    (failure,) = failed_jobs(config)
    assert failure.job_id == job_id
    assert failure.exception.startswith("runequeue.errors.JobTimeout: ")
    assert "1 job thread(s) still running were abandoned" in text
