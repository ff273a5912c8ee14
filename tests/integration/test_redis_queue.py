"""Dispatch and process through a real Redis, with an in-process worker."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import redis

from runequeue import DispatchError, Queue, QueueConfig
from runequeue.drivers import open_driver
from runequeue.drivers.base import Outgoing
from runequeue.drivers.redis import QueueKeys
from tests.support.jobs import (
    AlwaysFails,
    FlakyThenOk,
    HookRaises,
    Record,
    RecordInThread,
    Sleepy,
    read_ledger,
)
from tests.workers import failed_jobs, work


def events(ledger: Path) -> list[str]:
    return [row[0] for row in read_ledger(ledger)]


def test_dispatched_jobs_are_processed(config: QueueConfig, tmp_path: Path) -> None:
    ledger = tmp_path / "ledger"
    ids = [Queue.dispatch(config, Record(ledger=str(ledger))) for _ in range(3)]
    ids.append(Queue.dispatch(config, RecordInThread(ledger=str(ledger))))
    assert Queue.size(config) == 4

    worker = work(config)

    assert sorted(row[1] for row in read_ledger(ledger)) == sorted(ids)
    assert worker.processed == 4
    assert Queue.size(config) == 0


def test_dispatch_async_and_queue_override(config: QueueConfig, tmp_path: Path) -> None:
    ledger = tmp_path / "ledger"

    async def dispatch() -> str:
        job_id = await Queue.dispatch_async(config, Record(ledger=str(ledger)), queue="emails")
        await Queue.aclose_connections()
        return job_id

    job_id = asyncio.run(dispatch())
    assert Queue.size(config, "emails") == 1
    assert Queue.size(config) == 0
    work(config, queues=("emails",))
    assert [row[1] for row in read_ledger(ledger)] == [job_id]


def test_queues_are_drained_in_priority_order(config: QueueConfig, tmp_path: Path) -> None:
    ledger = tmp_path / "ledger"
    for _ in range(3):
        Queue.dispatch(config, Record(ledger=str(ledger), tag="low"), queue="low")
    for _ in range(3):
        Queue.dispatch(config, Record(ledger=str(ledger), tag="high"), queue="high")

    work(config, queues=("high", "low"), concurrency=1)

    assert events(ledger) == ["high"] * 3 + ["low"] * 3


def test_bulk_dispatch_is_one_call_and_all_jobs_run(config: QueueConfig, tmp_path: Path) -> None:
    ledger = tmp_path / "ledger"
    ids = Queue.dispatch_many(config, [Record(ledger=str(ledger)) for _ in range(200)])
    assert len(set(ids)) == 200
    assert Queue.size(config) == 200
    work(config, concurrency=20)
    assert sorted(row[1] for row in read_ledger(ledger)) == sorted(ids)


def test_delayed_job_waits_until_due(config: QueueConfig, tmp_path: Path) -> None:
    ledger = tmp_path / "ledger"
    Queue.dispatch(config, Record(ledger=str(ledger)), delay=1.0)

    async def check() -> None:
        driver = open_driver(config)
        try:
            early = await driver.reserve("default", 1, lease_s=30, default_tries=3)
            assert early.jobs == []
            assert early.next_due_s is not None and 0 < early.next_due_s <= 1.0
            await asyncio.sleep(early.next_due_s + 0.05)
            due = await driver.reserve("default", 1, lease_s=30, default_tries=3)
            assert len(due.jobs) == 1
        finally:
            await driver.close()

    asyncio.run(check())


def test_worker_picks_up_a_delayed_job_when_it_is_due(config: QueueConfig, tmp_path: Path) -> None:
    ledger = tmp_path / "ledger"
    Queue.dispatch(config, Record(ledger=str(ledger)), delay=0.5)
    # Not stop_when_empty: the queue is empty until the job is due.
    work(config, stop_when_empty=False, max_jobs=1, sleep_s=3)
    assert events(ledger) == ["done"]


def test_retry_then_success(config: QueueConfig, tmp_path: Path) -> None:
    ledger = tmp_path / "ledger"
    job_id = Queue.dispatch(config, FlakyThenOk(ledger=str(ledger), fail_times=2))

    work(config)

    assert [(e, a) for e, _, a, _ in read_ledger(ledger)] == [
        ("start", 1),
        ("start", 2),
        ("start", 3),
        ("done", 3),
    ]
    assert {row[1] for row in read_ledger(ledger)} == {job_id}
    assert failed_jobs(config) == []


def test_retry_exhaustion_calls_the_hook_and_records_the_failure(
    config: QueueConfig, tmp_path: Path
) -> None:
    ledger = tmp_path / "ledger"
    job_id = Queue.dispatch(config, AlwaysFails(ledger=str(ledger)))

    work(config)

    assert events(ledger) == ["start", "start", "hook:Boom"]
    (failure,) = failed_jobs(config)
    assert failure.job_id == job_id
    assert failure.queue == "default"
    assert failure.connection == "redis"
    assert failure.exception.startswith("tests.support.jobs.Boom: always fails")
    assert "Traceback" in failure.exception
    assert b'"job":"tests.AlwaysFails"' in failure.payload
    assert Queue.size(config) == 0


def test_backoff_delays_the_retry(config: QueueConfig, tmp_path: Path) -> None:
    ledger = tmp_path / "ledger"
    Queue.dispatch(config, FlakyThenOk(ledger=str(ledger), fail_times=1), backoff=30)

    work(config)  # stops when the ready queue is empty; the retry is 30 s away

    assert events(ledger) == ["start"]
    client = redis.Redis.from_url(config.redis_url)
    keys = QueueKeys.of(config.redis_prefix, "default")
    assert client.zcard(keys.delayed) == 1
    client.close()


def test_failing_hook_is_logged_and_the_job_still_lands(
    config: QueueConfig, tmp_path: Path
) -> None:
    ledger = tmp_path / "ledger"
    job_id = Queue.dispatch(config, HookRaises(ledger=str(ledger)))
    work(config)
    assert events(ledger) == ["hook"]
    assert [f.job_id for f in failed_jobs(config)] == [job_id]


def test_timeout_fails_the_attempt(config: QueueConfig, tmp_path: Path) -> None:
    ledger = tmp_path / "ledger"
    job_id = Queue.dispatch(config, Sleepy(ledger=str(ledger), seconds=30), timeout=0.3, tries=1)

    work(config)

    assert events(ledger) == ["start"]
    (failure,) = failed_jobs(config)
    assert failure.job_id == job_id
    assert failure.exception.startswith("runequeue.errors.JobTimeout")


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"\x80\x04\x95 not json at all", "InvalidPayload"),
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
    ],
)
def test_bad_payloads_go_to_the_failed_store_and_the_worker_carries_on(
    config: QueueConfig, tmp_path: Path, raw: bytes, reason: str
) -> None:
    ledger = tmp_path / "ledger"

    async def inject() -> None:
        driver = open_driver(config)
        try:
            await driver.push([Outgoing("bad-1", "default", raw)])
        finally:
            await driver.close()

    asyncio.run(inject())
    good = Queue.dispatch(config, Record(ledger=str(ledger)))

    work(config, concurrency=1)

    assert [row[1] for row in read_ledger(ledger)] == [good]
    (failure,) = failed_jobs(config)
    assert failure.job_id == "bad-1"
    assert failure.payload == raw.decode("utf-8", "backslashreplace").encode()
    assert failure.exception.startswith(f"runequeue.errors.{reason}")
    assert Queue.size(config) == 0


def test_dispatch_to_an_unreachable_redis_raises_a_clear_error() -> None:
    config = QueueConfig(driver="redis", redis_url="redis://:secret@127.0.0.1:1/0")
    with pytest.raises(DispatchError, match=r"redis://:\*\*\*@127.0.0.1:1/0") as caught:
        Queue.dispatch(config, Record(ledger="unused"))
    assert "secret" not in str(caught.value)


def test_clear_removes_waiting_delayed_and_reserved_jobs(config: QueueConfig) -> None:
    Queue.dispatch_many(config, [Record(ledger="x") for _ in range(3)])
    Queue.dispatch(config, Record(ledger="x"), delay=60)
    assert Queue.size(config) == 4
    assert Queue.clear(config) == 4
    assert Queue.size(config) == 0


def test_redispatching_the_same_id_stores_it_once(config: QueueConfig) -> None:
    item = Outgoing("same-id", "default", b"{}")

    async def push_twice() -> None:
        driver = open_driver(config)
        try:
            await driver.push([item])
            await driver.push([item])
        finally:
            await driver.close()

    asyncio.run(push_twice())
    assert Queue.size(config) == 1
