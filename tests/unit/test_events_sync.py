"""Events on the sync driver (the job runs inside dispatch) and coroutine listeners called from
blocking code."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from runequeue import JobFailed, JobProcessed, JobProcessing, JobQueued, Queue, QueueConfig
from runequeue.drivers.memory import default_store
from tests.support.jobs import AlwaysFails, Boom, Record


def test_the_sync_driver_is_heard_running_the_job_inside_dispatch(
    sqlite_url: str, tmp_path: Path
) -> None:
    sync = QueueConfig(driver="sync", database_url=sqlite_url)
    heard: list[str] = []
    kinds = (JobQueued, JobProcessing, JobProcessed, JobFailed)
    removers = [Queue.on(kind, lambda e: heard.append(type(e).__name__)) for kind in kinds]
    try:
        Queue.dispatch(sync, Record(str(tmp_path / "ledger")))
        with pytest.raises(Boom):
            Queue.dispatch(sync, AlwaysFails(str(tmp_path / "ledger")))
    finally:
        for remove in removers:
            remove()
    assert heard == ["JobProcessing", "JobProcessed", "JobQueued", "JobProcessing", "JobFailed"]


def test_a_coroutine_listener_of_a_blocking_dispatch_runs_to_its_end(tmp_path: Path) -> None:
    default_store().reset()
    memory = QueueConfig(driver="memory")
    awaited: list[str] = []

    async def listener(event: JobQueued) -> None:
        await asyncio.sleep(0)
        awaited.append(event.job_id)

    remove = Queue.on(JobQueued, listener)
    try:
        job_id = Queue.dispatch(memory, Record(str(tmp_path / "ledger")))
    finally:
        remove()
    assert awaited == [job_id]
