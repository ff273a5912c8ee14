"""A plain ``def failed`` hook runs in a thread: one that blocks holds up no other job."""

from __future__ import annotations

from pathlib import Path

from runequeue import Queue, QueueConfig
from runequeue.drivers.memory import default_store
from tests.support.jobs import FailsWithBlockingHook, Record, read_ledger
from tests.workers import work


def test_a_blocking_failed_hook_does_not_hold_up_the_other_jobs(
    sqlite_url: str, tmp_path: Path
) -> None:
    default_store().reset()
    config = QueueConfig(driver="memory", database_url=sqlite_url)
    ledger = tmp_path / "ledger"
    Queue.dispatch(config, FailsWithBlockingHook(ledger=str(ledger), seconds=0.5))
    Queue.dispatch(config, Record(ledger=str(ledger)), delay=0.1)  # due while the hook blocks

    work(config, concurrency=2, stop_when_empty=False, max_jobs=2, sleep_s=0.02)

    events = [row[0] for row in read_ledger(ledger)]
    assert events.index("done") < events.index("hook-end"), events
