"""The sync driver: the job runs inside dispatch, through the same path a worker takes."""

import asyncio
import dataclasses
from pathlib import Path

import pytest

from runequeue import Job, Queue, QueueConfig
from runequeue.errors import JobTimeout
from runequeue.failed_store import FailedJobStore
from tests.support.jobs import AlwaysFails, Boom, Record, RecordInThread, Sleepy, read_ledger


@pytest.fixture
def sync(sqlite_url: str) -> QueueConfig:
    return QueueConfig(driver="sync", database_url=sqlite_url)


def test_dispatch_runs_the_job_at_once(sync: QueueConfig, tmp_path: Path) -> None:
    ledger = tmp_path / "ledger"
    job_id = Queue.dispatch(sync, Record(ledger=str(ledger)))
    assert read_ledger(ledger) == [("done", job_id, 1, read_ledger(ledger)[0][3])]


def test_plain_def_handle_runs_too(sync: QueueConfig, tmp_path: Path) -> None:
    ledger = tmp_path / "ledger"
    Queue.dispatch(sync, RecordInThread(ledger=str(ledger)))
    assert [row[0] for row in read_ledger(ledger)] == ["done"]


def test_failure_calls_the_hook_once_and_reaches_the_caller(
    sync: QueueConfig, tmp_path: Path
) -> None:
    ledger = tmp_path / "ledger"
    with pytest.raises(Boom, match="always fails"):
        Queue.dispatch(sync, AlwaysFails(ledger=str(ledger)))
    assert [row[0] for row in read_ledger(ledger)] == ["start", "hook:Boom"]
    store = FailedJobStore(sync.database_url)
    (failure,) = store.all()
    store.close()
    assert (failure.connection, failure.queue, failure.job_name) == (
        "sync",
        "default",
        "tests.AlwaysFails",
    )
    assert failure.exception.startswith("tests.support.jobs.Boom: always fails")


def test_dispatch_from_inside_a_running_event_loop(sync: QueueConfig, tmp_path: Path) -> None:
    ledger = tmp_path / "ledger"

    async def handler() -> None:
        Queue.dispatch(sync, Record(ledger=str(ledger), tag="plain"))
        await Queue.dispatch_async(sync, Record(ledger=str(ledger), tag="awaited"))

    asyncio.run(handler())
    assert [row[0] for row in read_ledger(ledger)] == ["plain", "awaited"]


def test_async_failure_reaches_the_caller(sync: QueueConfig, tmp_path: Path) -> None:
    with pytest.raises(Boom):
        asyncio.run(Queue.dispatch_async(sync, AlwaysFails(ledger=str(tmp_path / "l"))))


def test_job_that_cannot_be_serialized_fails_in_development(sync: QueueConfig) -> None:
    @dataclasses.dataclass
    class HoldsASocket(Job, name="tests.unit.HoldsASocket"):
        thing: object

        async def handle(self) -> None:
            return None

    with pytest.raises(Exception, match="cannot be stored as JSON"):
        Queue.dispatch(sync, HoldsASocket(thing=object()))


def test_bulk_dispatch_runs_each_job(sync: QueueConfig, tmp_path: Path) -> None:
    ledger = tmp_path / "ledger"
    ids = Queue.dispatch_many(sync, [Record(ledger=str(ledger)) for _ in range(3)])
    assert [row[1] for row in read_ledger(ledger)] == ids


def test_a_job_past_its_timeout_raises_job_timeout(sync: QueueConfig, tmp_path: Path) -> None:
    with pytest.raises(JobTimeout, match=r"timed out after 0\.2s"):
        Queue.dispatch(sync, Sleepy(ledger=str(tmp_path / "ledger"), seconds=30), timeout=0.2)
