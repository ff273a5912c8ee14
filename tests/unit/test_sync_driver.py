"""The sync driver: the job runs inside dispatch, through the same path a worker takes."""

import asyncio
import dataclasses
from pathlib import Path

import pytest

from runequeue import Job, Queue, QueueConfig
from tests.support.jobs import AlwaysFails, Boom, Record, RecordInThread, read_ledger

SYNC = QueueConfig(driver="sync")


def test_dispatch_runs_the_job_at_once(tmp_path: Path) -> None:
    ledger = tmp_path / "ledger"
    job_id = Queue.dispatch(SYNC, Record(ledger=str(ledger)))
    assert read_ledger(ledger) == [("done", job_id, 1, read_ledger(ledger)[0][3])]


def test_plain_def_handle_runs_too(tmp_path: Path) -> None:
    ledger = tmp_path / "ledger"
    Queue.dispatch(SYNC, RecordInThread(ledger=str(ledger)))
    assert [row[0] for row in read_ledger(ledger)] == ["done"]


def test_failure_calls_the_hook_once_and_reaches_the_caller(tmp_path: Path) -> None:
    ledger = tmp_path / "ledger"
    with pytest.raises(Boom, match="always fails"):
        Queue.dispatch(SYNC, AlwaysFails(ledger=str(ledger)))
    assert [row[0] for row in read_ledger(ledger)] == ["start", "hook:Boom"]


def test_dispatch_from_inside_a_running_event_loop(tmp_path: Path) -> None:
    ledger = tmp_path / "ledger"

    async def handler() -> None:
        Queue.dispatch(SYNC, Record(ledger=str(ledger), tag="plain"))
        await Queue.dispatch_async(SYNC, Record(ledger=str(ledger), tag="awaited"))

    asyncio.run(handler())
    assert [row[0] for row in read_ledger(ledger)] == ["plain", "awaited"]


def test_async_failure_reaches_the_caller(tmp_path: Path) -> None:
    with pytest.raises(Boom):
        asyncio.run(Queue.dispatch_async(SYNC, AlwaysFails(ledger=str(tmp_path / "l"))))


def test_job_that_cannot_be_serialized_fails_in_development() -> None:
    @dataclasses.dataclass
    class HoldsASocket(Job, name="tests.unit.HoldsASocket"):
        thing: object

        async def handle(self) -> None:
            return None

    with pytest.raises(Exception, match="cannot be stored as JSON"):
        Queue.dispatch(SYNC, HoldsASocket(thing=object()))


def test_bulk_dispatch_runs_each_job(tmp_path: Path) -> None:
    ledger = tmp_path / "ledger"
    ids = Queue.dispatch_many(SYNC, [Record(ledger=str(ledger)) for _ in range(3)])
    assert [row[1] for row in read_ledger(ledger)] == ids
