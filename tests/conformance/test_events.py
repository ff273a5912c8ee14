"""Lifecycle events on every driver: `Queue.on(...)` listeners see a job queued, processing,
processed, retrying and failed, and the worker stopping; plain and coroutine listeners alike; a
listener that raises changes nothing for the job."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from runequeue import (
    JobFailed,
    JobProcessed,
    JobProcessing,
    JobQueued,
    JobRetrying,
    Queue,
    QueueConfig,
    WorkerStopping,
)
from runequeue.events import Event
from tests.support.jobs import AlwaysFails, Record, read_ledger
from tests.workers import failed_jobs, work

KINDS: list[type[Event]] = [
    JobQueued, JobProcessing, JobProcessed, JobRetrying, JobFailed, WorkerStopping,
]  # fmt: skip


@pytest.fixture
def heard() -> Iterator[list[Event]]:
    """Every event of this process while the test runs."""
    seen: list[Event] = []
    removers = [Queue.on(kind, seen.append) for kind in KINDS]
    yield seen
    for remove in removers:
        remove()


def test_a_job_s_life_is_heard_from_dispatch_to_the_end(
    backend: QueueConfig, tmp_path: Path, heard: list[Event]
) -> None:
    ledger = str(tmp_path / "ledger")
    ok = Queue.dispatch(backend, Record(ledger))
    bad = Queue.dispatch(backend, AlwaysFails(ledger), tries=2)

    work(backend, concurrency=1)

    def of(job_id: str) -> list[str]:
        names = []
        for event in heard:
            event_id = getattr(event, "job_id", None) or getattr(getattr(event, "job", None),
                                                                  "job_id", None)  # fmt: skip
            if event_id == job_id:
                names.append(type(event).__name__)
        return names

    assert of(ok) == ["JobQueued", "JobProcessing", "JobProcessed"]
    assert of(bad) == ["JobQueued", "JobProcessing", "JobRetrying", "JobProcessing", "JobFailed"]
    failed = next(e for e in heard if isinstance(e, JobFailed))
    assert (failed.job_name, failed.queue, failed.attempt) == ("tests.AlwaysFails", "default", 2)
    assert type(failed.error).__name__ == "Boom"
    assert isinstance(heard[-1], WorkerStopping) and heard[-1].status == 0


def test_every_dispatch_form_is_heard(backend: QueueConfig, tmp_path: Path) -> None:
    queued: list[JobQueued] = []
    remove = Queue.on(JobQueued, queued.append)
    try:
        ledger = str(tmp_path / "ledger")
        ids = [Queue.dispatch(backend, Record(ledger))]
        ids += Queue.dispatch_many(backend, [Record(ledger), Record(ledger)])

        async def from_async() -> None:
            ids.append(await Queue.dispatch_async(backend, Record(ledger)))
            ids.extend(await Queue.dispatch_many_async(backend, [Record(ledger)]))
            await Queue.aclose_connections()

        asyncio.run(from_async())
    finally:
        remove()
    assert [event.job_id for event in queued] == ids
    assert {(event.job_name, event.connection) for event in queued} == {
        ("tests.Record", backend.driver)
    }


def test_coroutine_listeners_are_awaited_and_errors_change_nothing(
    backend: QueueConfig, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    awaited: list[str] = []

    async def slow(event: JobProcessed) -> None:
        await asyncio.sleep(0.01)
        awaited.append(event.job.job_id)

    def broken(event: Event) -> None:
        raise RuntimeError("listener bug")

    removers = [Queue.on(JobProcessed, slow)] + [Queue.on(kind, broken) for kind in KINDS]
    try:
        job_id = Queue.dispatch(backend, Record(str(tmp_path / "ledger")))
        work(backend)
    finally:
        for remove in removers:
            remove()
    assert awaited == [job_id]
    assert [row[1] for row in read_ledger(tmp_path / "ledger")] == [job_id]  # ran once
    assert Queue.size(backend) == 0 and failed_jobs(backend) == []
    assert "a listener of JobProcessed raised; the job goes on" in caplog.text


def test_a_removed_listener_hears_nothing_more(backend: QueueConfig, tmp_path: Path) -> None:
    queued: list[JobQueued] = []
    remove = Queue.on(JobQueued, queued.append)
    Queue.dispatch(backend, Record(str(tmp_path / "ledger")))
    remove()
    Queue.dispatch(backend, Record(str(tmp_path / "ledger")))
    assert len(queued) == 1
