"""Every dispatch path refuses a job a worker could not rebuild as it was, and stores nothing
(issue 10, item 14): on redis, and on the database driver on SQLite, PostgreSQL and MySQL."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
from collections.abc import Callable
from typing import Any

import pytest

from runequeue import Job, Queue, QueueConfig
from runequeue.errors import InvalidPayload
from runequeue.failed_store import FailedJobStore


@dataclasses.dataclass
class Signup(Job, name="tests.dispatch_validation.Signup"):
    user_id: int
    context: dict[str, Any] = dataclasses.field(default_factory=dict)
    when: dt.datetime | None = None

    async def handle(self) -> None:
        return None


class Undecorated(Job, name="tests.dispatch_validation.Undecorated"):
    def __init__(self, user_id: int) -> None:
        self.user_id = user_id

    async def handle(self) -> None:
        return None


BAD_JOBS: dict[str, tuple[Callable[[], Job], str]] = {
    "wrong type": (
        lambda: Signup(user_id="abc"),  # type: ignore[arg-type]
        r"^cannot dispatch Signup: field user_id='abc': expected `int`, got `str`$",
    ),
    "not a dataclass": (
        lambda: Undecorated(user_id=1),
        r"^Undecorated is not a dataclass: decorate it with @dataclass$",
    ),
    "date in dict[str, Any]": (
        lambda: Signup(user_id=1, context={"signed_up": dt.date(2026, 1, 2)}),
        r"^cannot dispatch Signup: field context\['signed_up'\] = .* \(type date\) comes back",
    ),
    "set in dict[str, Any]": (
        lambda: Signup(user_id=1, context={"roles": {"admin"}}),
        r"field context\['roles'\] = \{'admin'\} \(type set\) comes back from JSON as",
    ),
}


def good_job() -> Signup:
    return Signup(user_id=1, context={"source": "ads"}, when=dt.datetime.now(dt.UTC))


@pytest.mark.parametrize("case", list(BAD_JOBS))
def test_dispatch_refuses_and_stores_nothing(backend: QueueConfig, case: str) -> None:
    make, message = BAD_JOBS[case]
    with pytest.raises(InvalidPayload, match=message):
        Queue.dispatch(backend, make())
    assert Queue.size(backend) == 0


@pytest.mark.parametrize("case", list(BAD_JOBS))
def test_bulk_dispatch_refuses_the_whole_batch(backend: QueueConfig, case: str) -> None:
    make, message = BAD_JOBS[case]
    with pytest.raises(InvalidPayload, match=message):
        Queue.dispatch_many(backend, [good_job(), make(), good_job()])
    assert Queue.size(backend) == 0


@pytest.mark.parametrize("case", list(BAD_JOBS))
def test_async_dispatch_refuses_and_stores_nothing(backend: QueueConfig, case: str) -> None:
    make, message = BAD_JOBS[case]

    async def dispatch_both() -> None:
        try:
            with pytest.raises(InvalidPayload, match=message):
                await Queue.dispatch_async(backend, make())
            with pytest.raises(InvalidPayload, match=message):
                await Queue.dispatch_many_async(backend, [good_job(), make()])
        finally:
            await Queue.aclose_connections()

    asyncio.run(dispatch_both())
    assert Queue.size(backend) == 0


def test_valid_jobs_are_still_stored(backend: QueueConfig) -> None:
    Queue.dispatch(backend, good_job())
    Queue.dispatch_many(backend, [good_job(), good_job()])
    assert Queue.size(backend) == 3


def test_the_sync_driver_refuses_before_running_or_recording(sqlite_url: str) -> None:
    sync = QueueConfig(driver="sync", database_url=sqlite_url)
    with pytest.raises(InvalidPayload, match=BAD_JOBS["date in dict[str, Any]"][1]):
        Queue.dispatch(sync, BAD_JOBS["date in dict[str, Any]"][0]())
    store = FailedJobStore(sqlite_url)
    try:
        assert store.all() == []
    finally:
        store.close()
