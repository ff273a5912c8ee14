"""What every queue driver promises, written once and run on each (see conftest's `backend`)."""

from __future__ import annotations

import asyncio
import dataclasses
import signal
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import pytest
from click.testing import CliRunner

from runequeue import DispatchError, Queue, QueueConfig
from runequeue.cli import cli
from runequeue.drivers import open_driver
from runequeue.drivers.base import Driver, Outgoing
from runequeue.failure_reasons import FailReason
from tests.conformance.conftest import needs_other_processes
from tests.support.jobs import (
    AlwaysFails,
    FlakyThenOk,
    Record,
    RecordInThread,
    Sleepy,
    read_ledger,
)
from tests.workers import failed_jobs, spawn_worker, wait_until, work

T = TypeVar("T")


def with_driver(config: QueueConfig, action: Callable[[Driver], Awaitable[T]]) -> T:
    async def run() -> T:
        driver = open_driver(config)
        try:
            return await action(driver)
        finally:
            await driver.close()

    return asyncio.run(run())


def events(ledger: Path) -> list[str]:
    return [row[0] for row in read_ledger(ledger)]


def test_dispatched_jobs_are_processed(backend: QueueConfig, tmp_path: Path) -> None:
    ledger = tmp_path / "ledger"
    ids = [Queue.dispatch(backend, Record(ledger=str(ledger))) for _ in range(3)]
    ids.append(Queue.dispatch(backend, RecordInThread(ledger=str(ledger))))
    assert Queue.size(backend) == 4

    worker = work(backend)

    assert sorted(row[1] for row in read_ledger(ledger)) == sorted(ids)
    assert worker.processed == 4
    assert Queue.size(backend) == 0


def test_bulk_dispatch_runs_every_job(backend: QueueConfig, tmp_path: Path) -> None:
    ledger = tmp_path / "ledger"
    ids = Queue.dispatch_many(backend, [Record(ledger=str(ledger)) for _ in range(200)])
    assert len(set(ids)) == 200
    assert Queue.size(backend) == 200
    work(backend, concurrency=20)
    assert sorted(row[1] for row in read_ledger(ledger)) == sorted(ids)


def test_queues_are_drained_in_priority_order(backend: QueueConfig, tmp_path: Path) -> None:
    ledger = tmp_path / "ledger"
    for _ in range(3):
        Queue.dispatch(backend, Record(ledger=str(ledger), tag="low"), queue="low")
    for _ in range(3):
        Queue.dispatch(backend, Record(ledger=str(ledger), tag="high"), queue="high")

    work(backend, queues=("high", "low"), concurrency=1)

    assert events(ledger) == ["high"] * 3 + ["low"] * 3


def test_delayed_job_is_not_handed_out_before_it_is_due(backend: QueueConfig) -> None:
    Queue.dispatch(backend, Record(ledger="unused"), delay=1.0)

    async def check(driver: Driver) -> None:
        early = await driver.reserve("default", 1, lease_s=30, default_tries=3)
        assert early.jobs == []
        assert early.next_due_s is not None and 0 < early.next_due_s <= 1.0
        await asyncio.sleep(early.next_due_s + 0.05)
        due = await driver.reserve("default", 1, lease_s=30, default_tries=3)
        assert len(due.jobs) == 1

    with_driver(backend, check)


def test_worker_runs_a_delayed_job_when_it_is_due(backend: QueueConfig, tmp_path: Path) -> None:
    ledger = tmp_path / "ledger"
    Queue.dispatch(backend, Record(ledger=str(ledger)), delay=0.5)
    work(backend, stop_when_empty=False, max_jobs=1, sleep_s=3)
    assert events(ledger) == ["done"]


def test_retry_then_success(backend: QueueConfig, tmp_path: Path) -> None:
    ledger = tmp_path / "ledger"
    Queue.dispatch(backend, FlakyThenOk(ledger=str(ledger), fail_times=2))
    work(backend)
    assert [(e, a) for e, _, a, _ in read_ledger(ledger)] == [
        ("start", 1),
        ("start", 2),
        ("start", 3),
        ("done", 3),
    ]
    assert failed_jobs(backend) == []


def test_backoff_delays_the_retry(backend: QueueConfig, tmp_path: Path) -> None:
    ledger = tmp_path / "ledger"
    Queue.dispatch(backend, FlakyThenOk(ledger=str(ledger), fail_times=1), backoff=30)
    work(backend)  # stops once nothing is ready: the retry is 30 s away
    assert events(ledger) == ["start"]
    assert Queue.size(backend) == 1


def test_exhausted_job_lands_in_failed_jobs(backend: QueueConfig, tmp_path: Path) -> None:
    ledger = tmp_path / "ledger"
    job_id = Queue.dispatch(backend, AlwaysFails(ledger=str(ledger)))
    work(backend)
    assert events(ledger) == ["start", "start", "hook:Boom"]
    (failure,) = failed_jobs(backend)
    assert (failure.job_id, failure.connection, failure.queue) == (
        job_id,
        backend.driver,
        "default",
    )
    assert failure.exception.startswith("tests.support.jobs.Boom: always fails")
    assert Queue.size(backend) == 0


def test_expired_lease_is_handed_out_again_and_the_stale_holder_is_refused(
    backend: QueueConfig,
) -> None:
    Queue.dispatch(backend, Record(ledger="unused"))

    async def check(driver: Driver) -> None:
        (first,) = (await driver.reserve("default", 1, lease_s=0.3, default_tries=3)).jobs
        assert (await driver.reserve("default", 1, lease_s=30, default_tries=3)).jobs == []
        await asyncio.sleep(0.5)
        await driver.recover("default", default_tries=3)
        batch = await driver.reserve("default", 1, lease_s=30, default_tries=3, alone=True)
        (second,) = batch.jobs
        assert second.job_id == first.job_id
        assert second.recovered
        assert (first.attempts, second.attempts) == (1, 2)
        assert second.token != first.token
        assert await driver.ack([first]) == [False]
        assert await driver.release(first, delay_s=0, refund=False) is False
        assert await driver.bury(first, "x") is False
        keeper = driver.lease_keeper()
        try:
            assert keeper.extend([first, second], 30) == [False, True]
        finally:
            keeper.close()
        assert await driver.ack([second]) == [True]

    with_driver(backend, check)
    assert Queue.size(backend) == 0


def test_a_recovered_job_goes_only_to_a_worker_running_nothing_and_by_itself(
    backend: QueueConfig,
) -> None:
    """Issue 11, item 7: the jobs of a dead worker are not handed out together again, so a poison
    job among them dies alone next time instead of taking its neighbours' attempts with it."""
    victims = Queue.dispatch_many(backend, [Record(ledger="unused") for _ in range(3)])
    fresh = Queue.dispatch_many(backend, [Record(ledger="unused") for _ in range(2)])

    async def check(driver: Driver) -> None:
        taken = (await driver.reserve("default", 3, lease_s=0.2, default_tries=3)).jobs
        assert [item.job_id for item in taken] == victims
        await asyncio.sleep(0.4)  # their worker "died": the leases expire
        await driver.recover("default", default_tries=3)

        busy = await driver.reserve("default", 10, lease_s=30, default_tries=3)
        assert [item.job_id for item in busy.jobs] == fresh  # a busy worker: ordinary jobs only
        assert not any(item.recovered for item in busy.jobs)
        assert busy.recovered_waiting
        alone = []
        for _ in victims:
            batch = await driver.reserve("default", 10, lease_s=30, default_tries=3, alone=True)
            (item,) = batch.jobs  # one at a time, however many slots are free
            assert item.recovered and item.attempts == 2
            alone.append(item.job_id)
        # Each once, in the order their leases expired; leases taken in one call expire together,
        # and Redis breaks that tie by id, so their order among themselves is not promised.
        assert sorted(alone) == sorted(victims)
        last = await driver.reserve("default", 10, lease_s=30, default_tries=3, alone=True)
        assert last.jobs == [] and not last.recovered_waiting
        assert await driver.size("default") == 5  # recovered jobs count as queued

    with_driver(backend, check)


def test_a_recovered_job_goes_out_by_itself_while_fresh_jobs_wait(backend: QueueConfig) -> None:
    """An idle worker with free slots is handed the recovered job alone, not with ready jobs."""
    (victim,) = Queue.dispatch_many(backend, [Record(ledger="unused")])

    async def check(driver: Driver) -> None:
        await driver.reserve("default", 1, lease_s=0.2, default_tries=3)
        Queue.dispatch_many(backend, [Record(ledger="unused") for _ in range(3)])
        await asyncio.sleep(0.4)  # its worker "died": the lease expires
        await driver.recover("default", default_tries=3)
        batch = await driver.reserve("default", 10, lease_s=30, default_tries=3, alone=True)
        assert [(item.job_id, item.recovered) for item in batch.jobs] == [(victim, True)]

    with_driver(backend, check)


def test_expired_lease_with_no_tries_left_is_failed(backend: QueueConfig) -> None:
    job_id = Queue.dispatch(backend, Record(ledger="unused"), tries=1)

    async def check(driver: Driver) -> None:
        await driver.reserve("default", 1, lease_s=0.2, default_tries=3)
        await asyncio.sleep(0.4)
        await driver.recover("default", default_tries=3)
        (buried,) = await driver.buried("default", 10)
        assert buried.job_id == job_id
        assert buried.error.startswith("runequeue.errors.LeaseExpired")
        assert buried.reason is FailReason.LEASE_EXPIRED

    with_driver(backend, check)


def test_the_failed_hook_of_a_lease_expired_job_is_claimed_once(backend: QueueConfig) -> None:
    """Every worker's sweep finds the job while failed_jobs is away; one of them calls its hook."""
    job_id = Queue.dispatch(backend, Record(ledger="unused"), tries=1)
    waiting = Queue.dispatch(backend, Record(ledger="unused"))

    async def check(driver: Driver) -> None:
        assert not await driver.claim_failed_hook("default", waiting)  # not buried: no claim
        await driver.reserve("default", 1, lease_s=0.2, default_tries=3)
        await asyncio.sleep(0.4)
        await driver.recover("default", default_tries=3)
        claims = [await driver.claim_failed_hook("default", job_id) for _ in range(3)]
        assert claims == [True, False, False]
        (buried,) = await driver.buried("default", 10)  # the claim leaves it in the outbox
        await driver.purge("default", buried.job_id)
        assert await driver.buried("default", 10) == []

    with_driver(backend, check)


def test_release_with_refund_gives_the_attempt_back(backend: QueueConfig) -> None:
    Queue.dispatch(backend, Record(ledger="unused"))

    async def check(driver: Driver) -> None:
        (item,) = (await driver.reserve("default", 1, lease_s=30, default_tries=3)).jobs
        assert await driver.release(item, delay_s=0, refund=True) is True
        (again,) = (await driver.reserve("default", 1, lease_s=30, default_tries=3)).jobs
        assert again.attempts == 1

    with_driver(backend, check)


def test_job_of_a_sigkilled_worker_is_finished_by_another(
    backend: QueueConfig, tmp_path: Path
) -> None:
    needs_other_processes(backend)
    config = dataclasses.replace(backend, retry_after_s=2)
    ledger = tmp_path / "ledger"
    job_id = Queue.dispatch(config, Sleepy(ledger=str(ledger), seconds=1.5))
    first = spawn_worker(config, "--sleep", "0.5", log=tmp_path / "first.log")
    try:
        wait_until(lambda: [r[1] for r in read_ledger(ledger)] == [job_id], what="the job")
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=10)
    finally:
        first.kill()
    second = spawn_worker(config, "--max-jobs", "1", "--sleep", "0.5", log=tmp_path / "second.log")
    try:
        assert second.wait(timeout=30) == 0
    finally:
        second.kill()
    rows = read_ledger(ledger)
    assert [(event, attempt) for event, _, attempt, _ in rows] == [
        ("start", 1),
        ("start", 2),
        ("done", 2),
    ]
    assert rows[0][3] != rows[2][3]


BAD_PAYLOADS = [
    (b"not json at all", "InvalidPayload"),
    (b'{"id": "x", "job": 12}', "InvalidPayload"),
    (
        b'{"id":"abc","job":"os.system","data":{"command":"touch /tmp/pwned"},'
        b'"queue":"default","created_at":0}',
        "UnknownJob",
    ),
    (
        b'{"id":"abd","job":"tests.TypedUser","data":{"user_id":"abc"},'
        b'"queue":"default","created_at":0}',
        "InvalidPayload",
    ),
]


@pytest.mark.parametrize(("raw", "reason"), BAD_PAYLOADS)
def test_bad_payloads_are_failed_and_the_worker_carries_on(
    backend: QueueConfig, tmp_path: Path, raw: bytes, reason: str
) -> None:
    ledger = tmp_path / "ledger"
    with_driver(backend, lambda driver: driver.push([Outgoing("bad-1", "default", raw)]))
    good = Queue.dispatch(backend, Record(ledger=str(ledger)))

    work(backend, concurrency=1)

    assert [row[1] for row in read_ledger(ledger)] == [good]
    (failure,) = failed_jobs(backend)
    assert (failure.job_id, failure.payload) == ("bad-1", raw)
    assert failure.exception.startswith(f"runequeue.errors.{reason}")
    assert Queue.size(backend) == 0


def test_clear_removes_waiting_delayed_and_reserved_jobs(backend: QueueConfig) -> None:
    Queue.dispatch_many(backend, [Record(ledger="x") for _ in range(3)])
    Queue.dispatch(backend, Record(ledger="x"), delay=60)
    with_driver(backend, lambda d: d.reserve("default", 1, lease_s=30, default_tries=3))
    assert Queue.size(backend) == 4
    assert Queue.clear(backend) == 4
    assert Queue.size(backend) == 0


def test_dispatching_the_same_id_twice_stores_it_once(backend: QueueConfig) -> None:
    item = Outgoing("same-id", "default", b"{}")

    async def push_twice(driver: Driver) -> None:
        await driver.push([item])
        await driver.push([item])

    with_driver(backend, push_twice)
    assert Queue.size(backend) == 1


def test_size_and_clear_commands(backend: QueueConfig) -> None:
    Queue.dispatch_many(backend, [Record(ledger="x") for _ in range(3)], queue="emails")
    env = {
        "QUEUE_DRIVER": backend.driver,
        "REDIS_URL": backend.redis_url,
        "QUEUE_REDIS_PREFIX": backend.redis_prefix,
        "DATABASE_URL": backend.database_url,
    }
    runner = CliRunner()
    size = runner.invoke(cli, ["queue:size", "--queue", "emails,default"], env=env)
    assert size.exit_code == 0, size.output
    assert size.output.splitlines() == ["emails: 3", "default: 0"]
    cleared = runner.invoke(cli, ["queue:clear", "--queue", "emails"], env=env)
    assert "cleared 3 job(s) from emails" in cleared.output
    assert Queue.size(backend, "emails") == 0


@pytest.mark.parametrize(
    "config",
    [
        QueueConfig(driver="redis", redis_url="redis://:secret@127.0.0.1:1/0"),
        QueueConfig(driver="database", database_url="postgresql://app:secret@127.0.0.1:1/app"),
        QueueConfig(driver="database", database_url="mysql://app:secret@127.0.0.1:1/app"),
    ],
    ids=["redis", "database-postgresql", "database-mysql"],
)
def test_dispatch_to_an_unreachable_backend_names_it_without_the_password(
    config: QueueConfig,
) -> None:
    with pytest.raises(DispatchError, match=r"127\.0\.0\.1:1") as caught:
        Queue.dispatch(config, Record(ledger="unused"))
    assert "secret" not in str(caught.value)
    assert "***" in str(caught.value)


def test_bulk_dispatch_of_many_thousands_in_one_call(backend: QueueConfig) -> None:
    # 20,000 rows would pass PostgreSQL's 65,535 bind parameters if sent as one VALUES list.
    ids = Queue.dispatch_many(backend, [Record(ledger="x") for _ in range(20_000)])
    assert len(set(ids)) == 20_000
    assert Queue.size(backend) == 20_000


def test_every_dispatch_form_stores_jobs_a_worker_runs(
    backend: QueueConfig, tmp_path: Path
) -> None:
    ledger = tmp_path / "ledger"

    async def dispatch_async() -> list[str]:
        one = await Queue.dispatch_async(backend, Record(ledger=str(ledger)))
        many = await Queue.dispatch_many_async(
            backend, [Record(ledger=str(ledger)) for _ in range(3)], queue="other"
        )
        delayed = await Queue.dispatch_async(backend, Record(ledger=str(ledger)), delay=0.3)
        await Queue.aclose_connections()
        return [one, *many, delayed]

    ids = [Queue.dispatch(backend, Record(ledger=str(ledger)))]
    ids += Queue.dispatch_many(backend, [Record(ledger=str(ledger)) for _ in range(2)])
    ids += asyncio.run(dispatch_async())
    assert (Queue.size(backend), Queue.size(backend, "other")) == (5, 3)

    work(backend, queues=("default", "other"), stop_when_empty=False, max_jobs=len(ids))

    assert sorted(row[1] for row in read_ledger(ledger)) == sorted(ids)
    assert Queue.size(backend) == Queue.size(backend, "other") == 0
