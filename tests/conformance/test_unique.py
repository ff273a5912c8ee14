"""Unique jobs on every driver: while one with the same unique id is queued, delayed or running, a
dispatch stores nothing and returns its id; the lock is freed on success, on failure for good, or
(``unique_until = "processing"``) when the handler starts, and expires after ``unique_for`` even
if its worker died. Race-free: 50 concurrent dispatches of one key store one job."""

from __future__ import annotations

import asyncio
import dataclasses
import threading
from pathlib import Path

from runequeue import JobQueued, Queue, QueueConfig
from runequeue.drivers.base import Driver
from tests.conformance.test_contract import with_driver
from tests.support.jobs import (
    OncePerUser,
    Record,
    UniqueFails,
    UniqueUntilProcessing,
    read_ledger,
)
from tests.workers import failed_jobs, work


def events(ledger: Path) -> list[str]:
    return [row[0] for row in read_ledger(ledger)]


def test_a_second_dispatch_of_a_queued_unique_job_stores_nothing(
    backend: QueueConfig, tmp_path: Path
) -> None:
    ledger = str(tmp_path / "ledger")
    first = Queue.dispatch(backend, OncePerUser(ledger, user_id=1, note_text="a"))
    assert Queue.dispatch(backend, OncePerUser(ledger, user_id=1, note_text="b")) == first
    assert Queue.dispatch(backend, OncePerUser(ledger, user_id=1), delay=5) == first
    other = Queue.dispatch(backend, OncePerUser(ledger, user_id=2))
    assert other != first
    assert Queue.size(backend) == 2

    work(backend)

    # Done: the lock is free, and the next dispatch is a new job.
    again = Queue.dispatch(backend, OncePerUser(ledger, user_id=1))
    assert again not in (first, other)
    assert Queue.size(backend) == 1


def test_every_dispatch_form_respects_the_lock(backend: QueueConfig, tmp_path: Path) -> None:
    ledger = str(tmp_path / "ledger")
    first = Queue.dispatch(backend, OncePerUser(ledger, user_id=1))
    many = Queue.dispatch_many(backend, [OncePerUser(ledger, user_id=1), OncePerUser(ledger, 3)])
    assert many[0] == first and many[1] != first

    async def from_async() -> tuple[str, list[str]]:
        one = await Queue.dispatch_async(backend, OncePerUser(ledger, user_id=1))
        more = await Queue.dispatch_many_async(backend, [OncePerUser(ledger, user_id=3)])
        await Queue.aclose_connections()
        return one, more

    one, more = asyncio.run(from_async())
    assert one == first and more == [many[1]]
    assert Queue.size(backend) == 2


def test_fifty_concurrent_dispatches_of_one_key_store_one_job(
    backend: QueueConfig, tmp_path: Path
) -> None:
    ledger = str(tmp_path / "ledger")
    start = threading.Barrier(50)
    ids: list[str] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def dispatch(n: int) -> None:
        start.wait()
        try:
            job_id = Queue.dispatch(backend, OncePerUser(ledger, user_id=7, note_text=str(n)))
        except BaseException as exc:
            with lock:
                errors.append(exc)
            raise
        with lock:
            ids.append(job_id)

    threads = [threading.Thread(target=dispatch, args=(n,)) for n in range(50)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == []
    assert len(ids) == 50 and len(set(ids)) == 1
    assert Queue.size(backend) == 1


def test_the_lock_is_freed_when_the_job_fails_for_good(
    backend: QueueConfig, tmp_path: Path
) -> None:
    ledger = str(tmp_path / "ledger")
    first = Queue.dispatch(backend, UniqueFails(ledger))
    work(backend)
    assert len(failed_jobs(backend)) == 1
    assert Queue.dispatch(backend, UniqueFails(ledger)) != first


def test_until_processing_frees_the_lock_when_the_handler_starts(
    backend: QueueConfig, tmp_path: Path
) -> None:
    ledger = tmp_path / "ledger"
    first = Queue.dispatch(backend, UniqueUntilProcessing(str(ledger), user_id=1))
    assert Queue.dispatch(backend, UniqueUntilProcessing(str(ledger), user_id=1)) == first
    dispatched_while_running: list[str] = []

    async def scenario() -> None:
        from runequeue.drivers import open_driver
        from runequeue.failed_store import FailedJobStore
        from runequeue.worker import Worker
        from tests.workers import options

        driver, store = open_driver(backend), FailedJobStore(backend.database_url)
        worker = Worker(driver, store, options(backend, max_jobs=2, stop_when_empty=False),
                        connection=backend.driver, codec=backend.codec)  # fmt: skip
        run = asyncio.create_task(worker.run())
        async with asyncio.timeout(20):
            while "start:1" not in events(ledger):
                await asyncio.sleep(0.01)
        job = UniqueUntilProcessing(str(ledger), user_id=1)
        dispatched_while_running.append(await Queue.dispatch_async(backend, job))
        await Queue.aclose_connections()
        await asyncio.wait_for(run, 30)
        await driver.close()
        store.close()

    asyncio.run(scenario())
    assert dispatched_while_running[0] != first
    assert events(ledger).count("done:1") == 2


def test_the_lock_expires_after_unique_for_when_its_worker_died(
    backend: QueueConfig, tmp_path: Path
) -> None:
    @dataclasses.dataclass
    class Brief(OncePerUser, name="tests.unique.Brief"):
        unique_for = 0.3  # type: ignore[assignment]

    ledger = str(tmp_path / "ledger")
    first = Queue.dispatch(backend, Brief(ledger, user_id=1))

    async def die_holding_it(driver: Driver) -> None:
        (taken,) = (await driver.reserve("default", 1, lease_s=30, default_tries=3)).jobs
        assert taken.job_id == first  # and its worker never comes back
        await asyncio.sleep(0.6)

    with_driver(backend, die_holding_it)
    assert Queue.dispatch(backend, Brief(ledger, user_id=1)) != first


def test_a_unique_job_not_stored_is_not_heard_as_queued(
    backend: QueueConfig, tmp_path: Path
) -> None:
    ledger = str(tmp_path / "ledger")
    queued: list[JobQueued] = []
    remove = Queue.on(JobQueued, queued.append)
    try:
        first = Queue.dispatch(backend, OncePerUser(ledger, user_id=1))
        many = Queue.dispatch_many(backend, [OncePerUser(ledger, 1), OncePerUser(ledger, 2)])
        assert Queue.dispatch(backend, OncePerUser(ledger, user_id=1)) == first
    finally:
        remove()
    assert [event.job_id for event in queued] == [first, many[1]]


def test_a_bulk_dispatch_mixing_unique_and_plain_jobs_stores_each(
    backend: QueueConfig, tmp_path: Path
) -> None:
    ledger = str(tmp_path / "ledger")
    first = Queue.dispatch(backend, OncePerUser(ledger, user_id=1))
    jobs = [OncePerUser(ledger, 1), Record(ledger), OncePerUser(ledger, 4), Record(ledger)]
    many = Queue.dispatch_many(backend, jobs)

    async def from_async() -> list[str]:
        ids = await Queue.dispatch_many_async(backend, jobs)
        await Queue.aclose_connections()
        return ids

    more = asyncio.run(from_async())
    assert many[0] == first and more[0] == first and more[2] == many[2]
    assert len({many[1], many[3], more[1], more[3]}) == 4
    assert Queue.size(backend) == 6  # first, user 4, and four plain jobs
