"""Batches on every driver: counters that move with each job's ack or failure, callbacks (then,
catch, finally) stored once each, cancel, jobs added from a running job, and a batch that reaches
100 % with ``then`` run once even when a worker is killed mid-batch."""

from __future__ import annotations

import asyncio
import dataclasses
import signal
from pathlib import Path

import pytest

from runequeue import Bus, Queue, QueueConfig
from runequeue.batches import JobBatch
from runequeue.drivers.base import Driver
from runequeue.errors import BatchNotFound, ConfigError
from runequeue.failed_jobs import FailedJobs
from runequeue.payload import decode
from tests.conformance.conftest import needs_other_processes
from tests.conformance.test_contract import with_driver
from tests.support.jobs import (
    BatchCallback,
    BatchMember,
    GrowsBatch,
    OncePerUser,
    Record,
    SeesCancelled,
    SturdyBatchMember,
    read_ledger,
)
from tests.workers import failed_jobs, spawn_worker, wait_until, work


def events(ledger: Path) -> list[str]:
    return [row[0] for row in read_ledger(ledger)]


def callbacks(ledger: str) -> tuple[BatchCallback, BatchCallback, BatchCallback]:
    return (
        BatchCallback(ledger, "then"),
        BatchCallback(ledger, "catch"),
        BatchCallback(ledger, "finally"),
    )


def test_a_batch_that_succeeds_runs_then_and_finally_once(
    backend: QueueConfig, tmp_path: Path
) -> None:
    ledger = str(tmp_path / "ledger")
    then, catch, finally_ = callbacks(ledger)
    batch = (
        Bus.batch([BatchMember(ledger, tag) for tag in "abc"])
        .name("import")
        .then(then)
        .catch(catch)
        .finally_(finally_)
        .dispatch(backend)
    )
    assert (batch.name, batch.total_jobs, batch.pending_jobs, batch.progress) == ("import", 3, 3, 0)
    assert Queue.size(backend) == 3

    work(backend)

    seen = events(tmp_path / "ledger")
    assert sorted(e for e in seen if e.startswith("done:")) == ["done:a", "done:b", "done:c"]
    # (then and finally are stored together, and may run side by side, in either order)
    assert sorted(e for e in seen if not e.startswith(("start", "done"))) == [
        f"finally:{batch.id}", f"then:{batch.id}",
    ]  # fmt: skip
    found = Bus.find_batch(backend, batch.id)
    assert found is not None
    assert (found.total_jobs, found.pending_jobs, found.processed_jobs, found.failed_jobs) == (
        3, 0, 3, 0,
    )  # fmt: skip
    assert found.progress == 100 and found.failed_job_ids == []
    assert found.finished_at is not None and found.cancelled_at is None
    assert found.created_at <= found.finished_at
    assert Queue.size(backend) == 0


def test_a_failure_runs_catch_once_cancels_the_batch_and_finally_runs_when_all_ran(
    backend: QueueConfig, tmp_path: Path
) -> None:
    ledger = str(tmp_path / "ledger")
    then, catch, finally_ = callbacks(ledger)
    jobs = [BatchMember(ledger, "a", fails=True), BatchMember(ledger, "b", fails=True),
            BatchMember(ledger, "c")]  # fmt: skip
    batch = Bus.batch(jobs).then(then).catch(catch).finally_(finally_).dispatch(backend)

    work(backend, concurrency=1)

    seen = events(tmp_path / "ledger")
    assert seen.count(f"catch:{batch.id}") == 1
    assert seen.count(f"finally:{batch.id}") == 1
    assert f"then:{batch.id}" not in seen
    found = batch.fresh()
    assert (found.total_jobs, found.pending_jobs, found.failed_jobs) == (3, 2, 2)
    assert found.progress == 33
    assert found.cancelled() and found.finished()
    failed_ids = {job.job_id for job in failed_jobs(backend)}
    assert set(found.failed_job_ids) == failed_ids and len(failed_ids) == 2


def test_allow_failures_keeps_the_batch_going_and_then_never_runs(
    backend: QueueConfig, tmp_path: Path
) -> None:
    ledger = str(tmp_path / "ledger")
    then, catch, finally_ = callbacks(ledger)
    jobs = [BatchMember(ledger, "a", fails=True), BatchMember(ledger, "b")]
    batch = (
        Bus.batch(jobs).then(then).catch(catch).finally_(finally_).allow_failures()
        .dispatch(backend)
    )  # fmt: skip

    work(backend)

    seen = events(tmp_path / "ledger")
    assert (seen.count(f"catch:{batch.id}"), seen.count(f"finally:{batch.id}")) == (1, 1)
    assert f"then:{batch.id}" not in seen
    found = batch.fresh()
    assert not found.cancelled() and found.finished() and found.has_failures()


def test_a_retried_failure_that_succeeds_leaves_the_failed_ids(
    backend: QueueConfig, tmp_path: Path
) -> None:
    ledger = str(tmp_path / "ledger")
    batch = Bus.batch([BatchMember(ledger, "a", fails=True), BatchMember(ledger, "b")]).dispatch(
        backend
    )
    work(backend)
    (failed,) = batch.fresh().failed_job_ids

    # The job is fixed (here: its failed_jobs row is edited to succeed), then retried.
    with FailedJobs(backend) as store:
        row = store.find(failed)
        assert row is not None
        fixed = row.payload.replace(b'"fails":true', b'"fails":false')
        _replace_payload(backend, failed, fixed)
        (outcome,) = store.retry([failed])
        assert outcome.status == "retried", outcome
    work(backend)

    found = batch.fresh()
    assert (found.pending_jobs, found.failed_jobs, found.failed_job_ids) == (0, 1, [])
    assert found.progress == 100


def _replace_payload(config: QueueConfig, job_id: str, raw: bytes) -> None:
    import sqlalchemy as sa

    from runequeue.db_engine import create_engine
    from runequeue.schema import failed_jobs as table

    engine = create_engine(config.database_url)
    with engine.begin() as conn:
        conn.execute(sa.update(table).where(table.c.uuid == job_id).values(payload=raw.decode()))
    engine.dispose()


def test_a_job_can_add_jobs_to_its_batch_and_then_waits_for_them(
    backend: QueueConfig, tmp_path: Path
) -> None:
    ledger = str(tmp_path / "ledger")
    then, _, finally_ = callbacks(ledger)
    batch = Bus.batch([GrowsBatch(ledger, 3)]).then(then).finally_(finally_).dispatch(backend)

    work(backend, concurrency=1)

    seen = events(tmp_path / "ledger")
    assert sorted(e for e in seen if e.startswith("done:")) == ["done:added0", "done:added1",
                                                                 "done:added2"]  # fmt: skip
    assert sorted(seen[-2:]) == [f"finally:{batch.id}", f"then:{batch.id}"]
    found = batch.fresh()
    assert (found.total_jobs, found.pending_jobs, found.progress) == (4, 0, 100)


def test_a_cancelled_batch_is_seen_as_cancelled_by_its_jobs(
    backend: QueueConfig, tmp_path: Path
) -> None:
    ledger = str(tmp_path / "ledger")
    batch = Bus.batch([SeesCancelled(ledger)]).dispatch(backend)
    batch.cancel()
    batch.cancel()  # a second cancel changes nothing

    work(backend)

    assert events(tmp_path / "ledger") == ["cancelled:True"]
    found = batch.fresh()
    assert found.cancelled_at is not None and found.cancelled_at == batch.fresh().cancelled_at


def test_an_empty_batch_is_done_at_once(backend: QueueConfig, tmp_path: Path) -> None:
    ledger = str(tmp_path / "ledger")
    then, catch, finally_ = callbacks(ledger)
    batch = Bus.batch([]).then(then).catch(catch).finally_(finally_).dispatch(backend)
    assert batch.finished() and batch.progress == 100

    work(backend)

    assert sorted(events(tmp_path / "ledger")) == [f"finally:{batch.id}", f"then:{batch.id}"]


def test_a_batch_id_that_does_not_exist(backend: QueueConfig, tmp_path: Path) -> None:
    assert Bus.find_batch(backend, "0" * 32) is None
    from runequeue.queue import batch_store

    ghost = JobBatch("0" * 32, "default", batch_store(backend), backend.codec)
    with pytest.raises(BatchNotFound, match="does not exist"):
        ghost.add([Record(str(tmp_path / "ledger"))])
    with pytest.raises(BatchNotFound):
        ghost.cancelled()
    assert Queue.size(backend) == 0  # nothing added


def test_a_batch_cannot_hold_unique_jobs(backend: QueueConfig, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unique"):
        Bus.batch([OncePerUser(str(tmp_path / "ledger"), 1)]).dispatch(backend)
    assert Queue.size(backend) == 0


def test_counters_move_with_the_ack_only_while_the_lease_is_held(
    backend: QueueConfig, tmp_path: Path
) -> None:
    ledger = str(tmp_path / "ledger")
    then, _, _ = callbacks(ledger)
    batch = Bus.batch([Record(ledger)]).then(then).dispatch(backend)

    async def check(driver: Driver) -> None:
        (lost,) = (await driver.reserve("default", 1, lease_s=0.2, default_tries=3)).jobs
        await asyncio.sleep(0.4)
        await driver.recover("default", default_tries=3)
        assert not await driver.ack_then(lost, (), batch.id)  # a stale worker moves nothing
        assert batch.fresh().pending_jobs == 1

        (held,) = (await driver.reserve("default", 1, lease_s=30, default_tries=3,
                                        alone=True)).jobs  # fmt: skip
        assert await driver.ack_then(held, (), batch.id)
        assert batch.fresh().pending_jobs == 0
        (then_job,) = (await driver.reserve("default", 1, lease_s=30, default_tries=3)).jobs
        assert decode(then_job.raw).job == "tests.BatchCallback"
        # Its batch moved once: recording the failure of a job twice counts it once.
        batches = driver.batches()
        await asyncio.to_thread(batches.batch_failed, "default", batch.id, "x" * 32)
        await asyncio.to_thread(batches.batch_failed, "default", batch.id, "x" * 32)
        assert batch.fresh().failed_jobs == 1

    with_driver(backend, check)


def test_a_job_whose_batch_is_gone_is_acked_all_the_same(
    backend: QueueConfig, tmp_path: Path
) -> None:
    ledger = str(tmp_path / "ledger")
    Bus.batch([BatchMember(ledger, "a")]).dispatch(backend)
    assert Bus.prune_batches(backend, hours=0, unfinished_hours=0) == 1

    work(backend)

    assert events(tmp_path / "ledger") == ["start:a", "done:a"]
    assert Queue.size(backend) == 0 and not failed_jobs(backend)


def test_a_large_batch_is_stored_whole(backend: QueueConfig, tmp_path: Path) -> None:
    ledger = str(tmp_path / "ledger")
    batch = Bus.batch([Record(ledger) for _ in range(2500)]).on_queue("big").dispatch(backend)
    assert Queue.size(backend, "big") == 2500
    assert [b.id for b in Bus.batches(backend)] == [batch.id]


def test_pruning_keeps_unfinished_batches_unless_asked(
    backend: QueueConfig, tmp_path: Path
) -> None:
    ledger = str(tmp_path / "ledger")
    done = Bus.batch([]).dispatch(backend)
    waiting = Bus.batch([Record(ledger)]).dispatch(backend)
    assert Bus.prune_batches(backend, hours=1) == 0  # finished just now
    assert Bus.prune_batches(backend, hours=0) == 1
    assert Bus.find_batch(backend, done.id) is None
    assert Bus.find_batch(backend, waiting.id) is not None
    assert Bus.prune_batches(backend, hours=0, unfinished_hours=0) == 1
    assert Bus.batches(backend) == []


def test_a_batch_reaches_100_percent_with_then_once_when_a_worker_is_killed_mid_batch(
    backend: QueueConfig, tmp_path: Path
) -> None:
    needs_other_processes(backend)
    config = dataclasses.replace(backend, retry_after_s=2)
    ledger = str(tmp_path / "ledger")
    then, catch, finally_ = callbacks(ledger)
    jobs = [SturdyBatchMember(ledger, f"j{i}", seconds=0.3) for i in range(12)]
    jobs[3] = SturdyBatchMember(ledger, "slow", seconds=3)
    batch = Bus.batch(jobs).then(then).catch(catch).finally_(finally_).dispatch(config)

    first = spawn_worker(config, "--concurrency", "2", "--sleep", "0.2",
                         log=tmp_path / "first.log")  # fmt: skip
    try:
        wait_until(lambda: "start:slow" in events(tmp_path / "ledger"), what="the slow job")
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=10)
    finally:
        first.kill()
    # The second worker takes what is left, and the killed worker's jobs once their leases
    # expire (a worker stopping when empty could stop before that).
    second = spawn_worker(config, "--sleep", "0.2", log=tmp_path / "second.log")
    try:
        wait_until(lambda: f"finally:{batch.id}" in events(tmp_path / "ledger"), timeout_s=60,
                   what="the batch to finish")  # fmt: skip
        wait_until(lambda: f"then:{batch.id}" in events(tmp_path / "ledger"), what="then")
        wait_until(lambda: Queue.size(config) == 0, what="the queue to empty")
        second.send_signal(signal.SIGTERM)
        assert second.wait(timeout=30) == 0
    finally:
        second.kill()

    seen = events(tmp_path / "ledger")
    assert (seen.count(f"then:{batch.id}"), seen.count(f"finally:{batch.id}")) == (1, 1)
    assert f"catch:{batch.id}" not in seen
    found = batch.fresh()
    assert (found.pending_jobs, found.failed_jobs, found.progress) == (0, 0, 100)
    assert Queue.size(config) == 0


def test_a_batch_job_failed_by_its_lease_is_counted_once(
    backend: QueueConfig, tmp_path: Path
) -> None:
    ledger = str(tmp_path / "ledger")
    config = dataclasses.replace(backend, retry_after_s=0.3)
    _, catch, finally_ = callbacks(ledger)
    batch = Bus.batch([BatchMember(ledger, "a")]).catch(catch).finally_(finally_).dispatch(config)

    async def lose_the_lease(driver: Driver) -> None:
        # Its one try is taken and never settled: its worker "died".
        await driver.reserve("default", 1, lease_s=0.3, default_tries=1)
        await asyncio.sleep(0.5)

    with_driver(config, lose_the_lease)
    work(config, lease_s=0.3)  # finds the lease expired, and records the failure as it stops
    work(config, lease_s=0.3)  # runs the callbacks that stored

    seen = events(tmp_path / "ledger")
    assert (seen.count(f"catch:{batch.id}"), seen.count(f"finally:{batch.id}")) == (1, 1)
    found = batch.fresh()
    assert (found.failed_jobs, found.pending_jobs, found.finished()) == (1, 1, True)
    assert [job.job_id for job in failed_jobs(config)] == found.failed_job_ids


def test_adding_the_same_jobs_twice_counts_them_once(backend: QueueConfig, tmp_path: Path) -> None:
    from runequeue.job_batch import encoded
    from runequeue.payload import BatchRef
    from runequeue.queue import batch_store

    ledger = str(tmp_path / "ledger")
    batch = Bus.batch([Record(ledger)]).dispatch(backend)
    items = [encoded(Record(ledger), "default", BatchRef(id=batch.id), backend.codec)]
    store = batch_store(backend)
    assert store.add_to_batch(batch.id, "default", items)
    assert store.add_to_batch(batch.id, "default", items)  # an add repeated after a lost reply
    assert (batch.fresh().total_jobs, batch.fresh().pending_jobs) == (2, 2)
    assert Queue.size(backend) == 2
