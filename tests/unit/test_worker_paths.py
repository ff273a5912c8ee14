"""The worker's failure paths, on the in-process memory driver: a backend that errors (reserve, ack,
release, bury, renew, wait, sweep), a lease lost or refused, a full backend, stops and
cancellations, recovered jobs, limits, stuck threads and a failed-job store that is away.

Each test gets a `MemoryStore` of its own whose clock stands still (leases expire only when a test
moves it on with `MemoryStore.advance`), so no lease runs out by itself however slow the machine is.
Waits are bounded (`LIMIT_S`); nothing here measures speed.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import logging
import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from runequeue import Job, payload
from runequeue.backoff import Backoff
from runequeue.drivers.base import Batch, LeaseKeeper, Outgoing, Reserved
from runequeue.drivers.memory import MemoryDriver, MemoryProducer, MemoryStore
from runequeue.errors import BackendFull, FailedStoreError
from runequeue.failed_job import FailedJob
from runequeue.failed_store import FailedJobStore
from runequeue.payload import Codec, Envelope
from runequeue.runner import DEFAULT_CODEC
from runequeue.schema import migrate
from runequeue.worker import EXIT_THREADS_STUCK, Worker, WorkerOptions
from tests.support.jobs import (
    AlwaysFails,
    Boom,
    FlakyThenOk,
    HangsInThread,
    Record,
    note,
    read_ledger,
)

LIMIT_S = 15.0  # the longest any wait here may take: a bound, never an expectation
QUEUE = "default"
FROZEN_AT = 1_000_000.0


@dataclasses.dataclass
class Gated(Job, name="tests.paths.Gated"):
    """Notes "start", waits (awaiting, on the event loop) for the file ``gate`` to exist, then
    notes "done", or with ``fails`` raises."""

    ledger: str
    gate: str
    fails: bool = False

    async def handle(self) -> None:
        note(self.ledger, "start", self)
        while not os.path.exists(self.gate):
            await asyncio.sleep(0.01)
        if self.fails:
            raise Boom("failed once let through")
        note(self.ledger, "done", self)


class CountingKeeper(MemoryProducer):
    """The memory lease keeper, counting its renewals (failed ones too) once they are over."""

    def __init__(self, store: MemoryStore, calls: collections.Counter[str]) -> None:
        super().__init__(store)
        self.calls = calls

    def extend(self, items: Sequence[Reserved], lease_s: float) -> list[bool]:
        try:
            return super().extend(items, lease_s)
        finally:
            self.calls["extend"] += 1


class WatchedDriver(MemoryDriver):
    """The memory driver, keeping what it handed out and counting calls."""

    def __init__(self, store: MemoryStore) -> None:
        super().__init__(store)
        self.reserved: list[Reserved] = []
        self.calls: collections.Counter[str] = collections.Counter()
        self.reply_s = 0.0  # how long a reserve's reply takes to come back (a network's)

    async def reserve(
        self, queue: str, count: int, *, lease_s: float, default_tries: int, alone: bool = False
    ) -> Batch:
        self.calls["reserve"] += 1
        batch = await super().reserve(
            queue, count, lease_s=lease_s, default_tries=default_tries, alone=alone
        )
        self.reserved += batch.jobs
        if self.reply_s:
            await asyncio.sleep(self.reply_s)
        return batch

    async def wait(self, queues: Sequence[str], timeout_s: float) -> None:
        self.calls["wait"] += 1  # counted as the wait begins: a push from then on ends it
        await super().wait(queues, timeout_s)

    def lease_keeper(self) -> LeaseKeeper:
        return CountingKeeper(self.store, self.calls)


class Rig:
    """One test's backend, failed-job store, ledger and gates."""

    def __init__(self, tmp_path: Path, failed_url: str) -> None:
        self.tmp_path = tmp_path
        self.store = MemoryStore(clock=lambda: FROZEN_AT)
        self.driver = WatchedDriver(self.store)
        self.failed_url = failed_url
        self.failed = FailedJobStore(failed_url)
        self.ledger = tmp_path / "ledger"

    def push(self, job: Job, *, tries: int | None = None, delay_s: float = 0) -> str:
        envelope = payload.envelope_for(job, queue=QUEUE, tries=tries)
        raw = DEFAULT_CODEC.encode(envelope)
        item = Outgoing(envelope.id, QUEUE, raw, delay_s, envelope.max_tries)
        MemoryProducer(self.store).push([item])
        return envelope.id

    def gated(self, *, fails: bool = False) -> Gated:
        return Gated(ledger=str(self.ledger), gate=str(self.tmp_path / "gate"), fails=fails)

    def open_gate(self) -> None:
        (self.tmp_path / "gate").touch()

    def record(self) -> Record:
        return Record(ledger=str(self.ledger))

    def events(self) -> list[tuple[str, str, int]]:
        """The ledger as (event, job id, attempt)."""
        return [(event, job_id, attempt) for event, job_id, attempt, _ in read_ledger(self.ledger)]

    def started(self, job_id: str) -> bool:
        return any(event == "start" and who == job_id for event, who, _ in self.events())

    def worker(self, codec: Codec = DEFAULT_CODEC, **overrides: Any) -> Worker:
        settings = WorkerOptions(
            queues=(QUEUE,),
            concurrency=2,
            sleep_s=0.05,
            sweep_interval_s=0.05,
            lease_s=30,  # the clock stands still: a lease ends only when a test advances it
            stop_when_empty=True,
            shutdown_timeout_s=LIMIT_S * 40,  # a stop waits for running jobs: a second one forces
        )
        settings = dataclasses.replace(settings, **overrides)
        return Worker(self.driver, self.failed, settings, connection="memory", codec=codec)

    def failures(self) -> list[FailedJob]:
        return self.failed.all()

    async def take(self, lease_s: float = 60) -> Reserved:
        """Reserve the next job as another worker would (the test's own driver)."""
        batch = await MemoryDriver(self.store).reserve(
            QUEUE, 1, lease_s=lease_s, default_tries=3, alone=True
        )
        (item,) = batch.jobs
        return item

    async def steal(self, item: Reserved) -> Reserved:
        """Take ``item``'s lease away, as when it expires and another worker reserves the job:
        put back and reserved by another in one step, so the worker cannot take it first."""
        assert self.store.release(item, delay_s=0, refund=False)
        return await self.take()


@pytest.fixture
def rig(tmp_path: Path, sqlite_url: str) -> Iterator[Rig]:
    made = Rig(tmp_path, sqlite_url)
    yield made
    made.failed.close()


@pytest.fixture
def logs(caplog: pytest.LogCaptureFixture) -> Callable[[str], list[str]]:
    """The worker's log lines containing some text."""
    caplog.set_level(logging.INFO, logger="runequeue")

    def containing(text: str) -> list[str]:
        return [r.getMessage() for r in caplog.records if text in r.getMessage()]

    return containing


@pytest.fixture
def backoffs(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Back-off waits of 10 ms; the list gets each wait's count of failures in a row."""
    seen: list[int] = []

    def next_delay(self: Backoff) -> float:
        self.failures += 1
        seen.append(self.failures)
        return 0.01

    monkeypatch.setattr(Backoff, "next_delay", next_delay)
    return seen


def run(worker: Worker) -> int:
    """Run ``worker`` until it stops by itself (within `LIMIT_S`); its exit status."""

    async def scenario() -> int:
        return await finish(worker, asyncio.create_task(worker.run()))

    return asyncio.run(scenario())


async def finish(worker: Worker, task: asyncio.Task[int]) -> int:
    done, _ = await asyncio.wait([task], timeout=LIMIT_S)
    if not done:
        worker.request_stop()
        worker.request_stop()
        await asyncio.wait([task], timeout=LIMIT_S)
        raise AssertionError(f"the worker was still running after {LIMIT_S}s")
    return task.result()


async def eventually(condition: Callable[[], bool], what: str) -> None:
    try:
        async with asyncio.timeout(LIMIT_S):
            while not condition():
                await asyncio.sleep(0.01)
    except TimeoutError:
        raise AssertionError(f"timed out waiting for {what}") from None


async def cancelled(task: asyncio.Task[int]) -> bool:
    """Whether ``task`` ended cancelled (within `LIMIT_S`)."""
    done, _ = await asyncio.wait([task], timeout=LIMIT_S)
    return bool(done) and task.cancelled()


def size(rig: Rig) -> int:
    return rig.store.size(QUEUE)


# -- a backend that errors -----------------------------------------------------------------------


def test_reserve_errors_back_off_longer_each_time_and_afresh_after_recovery(
    rig: Rig, logs: Callable[[str], list[str]], backoffs: list[int]
) -> None:
    rig.store.fail("reserve", times=3)
    first = rig.push(rig.record())

    async def scenario() -> int:
        worker = rig.worker(stop_when_empty=False)
        task = asyncio.create_task(worker.run())
        await eventually(lambda: len(rig.events()) == 1, "the first job")
        rig.store.fail("reserve", times=2)  # away again, after it had come back
        second = rig.push(rig.record())
        await eventually(lambda: len(rig.events()) == 2, "the second job")
        worker.request_stop()
        assert [job_id for _, job_id, _ in rig.events()] == [first, second]
        return await finish(worker, task)

    assert asyncio.run(scenario()) == 0
    assert backoffs == [1, 2, 3, 1, 2]  # reset once a reserve worked
    assert len(logs("reserve failed (memory driver: injected fault in reserve)")) == 5
    assert size(rig) == 0


def test_a_broken_reserve_is_retried_at_a_backing_off_pace_not_in_a_hot_loop(rig: Rig) -> None:
    rig.store.fail("reserve", times=1_000_000)
    worker = rig.worker(stop_when_empty=False, max_time_s=0.5)
    assert run(worker) == 0
    # The real back-off (0.05-0.1 s doubling) leaves room for a handful of tries in half a second;
    # a loop that did not wait would have made thousands.
    assert 1 <= rig.driver.calls["reserve"] <= 10


def test_a_stop_cuts_a_reserve_back_off_short(
    rig: Rig, monkeypatch: pytest.MonkeyPatch, logs: Callable[[str], list[str]]
) -> None:
    monkeypatch.setattr(Backoff, "next_delay", lambda self: 3600.0)
    rig.store.fail("reserve", times=1_000_000)

    async def scenario() -> int:
        worker = rig.worker(stop_when_empty=False)
        task = asyncio.create_task(worker.run())
        await eventually(lambda: bool(logs("reserve failed")), "a failed reserve")
        worker.request_stop()
        return await finish(worker, task)  # an hour of back-off would be far past LIMIT_S

    assert asyncio.run(scenario()) == 0
    assert rig.driver.calls["reserve"] == 1


def test_a_full_backend_is_said_once_not_at_every_try_and_again_after_recovery(
    rig: Rig, caplog: pytest.LogCaptureFixture, backoffs: list[int]
) -> None:
    full = BackendFull("OOM command not allowed when used memory > 'maxmemory'")
    caplog.set_level(logging.INFO, logger="runequeue")

    async def scenario() -> int:
        rig.store.fail("reserve", times=6, error=full)
        worker = rig.worker(stop_when_empty=False)
        task = asyncio.create_task(worker.run())
        rig.push(rig.record())
        await eventually(lambda: len(rig.events()) == 1, "the first job")
        rig.store.fail("reserve", times=4, error=full)
        rig.push(rig.record())
        await eventually(lambda: len(rig.events()) == 2, "the second job")
        worker.request_stop()
        return await finish(worker, task)

    assert asyncio.run(scenario()) == 0
    assert len(backoffs) == 10  # every try failed and backed off...
    said = [r for r in caplog.records if "OOM command not allowed" in r.getMessage()]
    assert [r.levelno for r in said] == [logging.ERROR] * 2  # ...but it was said once per outage
    assert all(r.getMessage().startswith("reserve failed: OOM") for r in said)


def test_acks_are_retried_until_they_land(
    rig: Rig, logs: Callable[[str], list[str]], backoffs: list[int]
) -> None:
    rig.store.fail("ack", times=7)  # more than a release is tried: acks never give up
    rig.push(rig.record())
    worker = rig.worker()
    assert run(worker) == 0
    assert len(logs("ack failed")) == 7
    assert worker.processed == 1
    assert size(rig) == 0
    assert rig.failures() == []


def test_a_release_that_errors_is_tried_again_and_the_retry_runs(
    rig: Rig, logs: Callable[[str], list[str]], backoffs: list[int]
) -> None:
    rig.store.fail("release", times=2)
    job_id = rig.push(FlakyThenOk(ledger=str(rig.ledger), fail_times=1))
    worker = rig.worker()
    assert run(worker) == 0
    assert len(logs("release failed")) == 2
    assert rig.events() == [("start", job_id, 1), ("start", job_id, 2), ("done", job_id, 2)]
    assert worker.processed == 1
    assert size(rig) == 0


def test_a_release_gives_up_after_five_tries_and_the_job_comes_back_when_its_lease_expires(
    rig: Rig, logs: Callable[[str], list[str]], backoffs: list[int]
) -> None:
    rig.store.fail("release", times=5)
    job_id = rig.push(FlakyThenOk(ledger=str(rig.ledger), fail_times=1))
    worker = rig.worker()
    assert run(worker) == 0
    assert len(logs("release failed")) == 5
    assert logs(f"release of {job_id} gave up after 5 tries")
    assert rig.events() == [("start", job_id, 1)]
    assert size(rig) == 1  # still leased to the worker that gave up

    async def after_the_lease() -> Reserved:
        rig.store.advance(31)
        return await rig.take()

    again = asyncio.run(after_the_lease())
    assert (again.job_id, again.attempts, again.recovered) == (job_id, 2, True)


def test_a_bury_that_errors_lands_with_its_failure_recorded_once(
    rig: Rig, caplog: pytest.LogCaptureFixture, backoffs: list[int]
) -> None:
    caplog.set_level(logging.INFO, logger="runequeue")
    rig.store.fail("bury", times=6, error=BackendFull("OOM"))
    job_id = rig.push(AlwaysFails(ledger=str(rig.ledger)), tries=1)
    worker = rig.worker()
    assert run(worker) == 0
    [failure] = rig.failures()
    assert failure.job_id == job_id
    assert "always fails" in failure.exception
    assert [event for event, _, _ in rig.events()] == ["start", "hook:Boom"]
    full = [r.getMessage() for r in caplog.records if "OOM" in r.getMessage()]
    assert full == ["fail failed: OOM; retrying"]  # six tries, one line
    assert worker.processed == 1
    assert size(rig) == 0
    assert rig.store.buried(QUEUE, 10) == []  # purged once recorded


def test_errors_while_idle_waiting_and_sweeping_do_not_stop_the_worker(
    rig: Rig, logs: Callable[[str], list[str]], backoffs: list[int]
) -> None:
    rig.store.fail("wait", times=2)

    async def scenario() -> int:
        worker = rig.worker(stop_when_empty=False)
        task = asyncio.create_task(worker.run())
        await eventually(lambda: len(logs("waiting for jobs failed")) == 2, "two failed waits")
        rig.store.fail("recover", times=2)
        await eventually(lambda: len(logs("sweep of default failed")) == 2, "two failed sweeps")
        job_id = rig.push(rig.record())
        await eventually(lambda: rig.events() == [("done", job_id, 1)], "the job")
        worker.request_stop()
        return await finish(worker, task)

    assert asyncio.run(scenario()) == 0
    assert size(rig) == 0


# -- leases lost -----------------------------------------------------------------------------------


def test_a_lease_the_heartbeat_finds_lost_abandons_the_attempt(
    rig: Rig, logs: Callable[[str], list[str]]
) -> None:
    job_id = rig.push(rig.gated())

    async def scenario() -> tuple[int, Reserved]:
        worker = rig.worker(lease_s=0.3)  # renewed every 0.1 s
        task = asyncio.create_task(worker.run())
        await eventually(lambda: rig.started(job_id), "the job to start")
        (mine,) = rig.driver.reserved
        theirs = await rig.steal(mine)
        # The gate stays shut: the worker stops only because it gave the attempt up.
        status = await finish(worker, task)
        assert worker.processed == 0
        return status, theirs

    status, theirs = asyncio.run(scenario())
    assert status == 0
    assert logs(f"LOST  {job_id}: lease lost (another worker has it); attempt abandoned")
    assert not logs("BACK")  # not put back: the other worker has it
    assert rig.events() == [("start", job_id, 1)]

    async def other_worker_finishes() -> list[bool]:
        return await MemoryDriver(rig.store).ack([theirs])

    assert asyncio.run(other_worker_finishes()) == [True]  # untouched by the worker that lost it
    assert size(rig) == 0


@pytest.mark.parametrize(
    ("fails", "tries", "said"),
    [
        (False, None, "LOST  {id}: finished, but its lease had expired; it may run again"),
        (True, 3, "release of {id} refused: lease lost"),
        (True, 1, "fail of {id} refused: lease lost"),
    ],
    ids=["ack", "release", "bury"],
)
def test_settling_an_attempt_whose_lease_was_taken_is_refused(
    rig: Rig, logs: Callable[[str], list[str]], fails: bool, tries: int | None, said: str
) -> None:
    job_id = rig.push(rig.gated(fails=fails), tries=tries)

    async def scenario() -> Reserved:
        worker = rig.worker()  # a 30 s lease on a clock that stands still: no heartbeat notices
        task = asyncio.create_task(worker.run())
        await eventually(lambda: rig.started(job_id), "the job to start")
        (mine,) = rig.driver.reserved
        theirs = await rig.steal(mine)
        rig.open_gate()
        assert await finish(worker, task) == 0
        return theirs

    theirs = asyncio.run(scenario())
    assert logs(said.format(id=job_id))
    assert rig.failures() == []  # a refused bury records nothing: the job is the other's

    async def other_worker_finishes() -> list[bool]:
        return await MemoryDriver(rig.store).ack([theirs])

    assert asyncio.run(other_worker_finishes()) == [True]
    assert size(rig) == 0


def test_renewal_errors_are_logged_and_the_lease_is_kept(
    rig: Rig, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="runequeue")
    calls = rig.driver.calls
    job_id = rig.push(rig.gated())

    async def failing(times: int, error: BackendFull | None = None) -> None:
        """The next ``times`` renewals fail; returns once one has worked after them (two more
        than ``times`` are over: one may have been under way, unharmed, as the fault was set)."""
        goal = calls["extend"] + times + 2
        rig.store.fail("extend", times=times, error=error)
        await eventually(lambda: calls["extend"] >= goal, f"{times + 2} more renewals")

    async def scenario() -> int:
        worker = rig.worker(lease_s=0.3)  # renewed every 0.1 s
        task = asyncio.create_task(worker.run())
        await eventually(lambda: rig.started(job_id), "the job to start")
        await failing(3)
        await failing(3, BackendFull("OOM"))
        await failing(1, BackendFull("OOM"))
        rig.open_gate()
        return await finish(worker, task)

    assert asyncio.run(scenario()) == 0
    lines = [r.getMessage() for r in caplog.records if "could not renew" in r.getMessage()]
    unavailable = "could not renew 1 lease(s): memory driver: injected fault in extend"
    # Every unreachable beat is a line; a full backend is said once, and again after it recovered.
    assert lines == [unavailable] * 3 + ["could not renew 1 lease(s): OOM"] * 2
    assert not any("LOST" in r.getMessage() for r in caplog.records)
    assert rig.events() == [("start", job_id, 1), ("done", job_id, 1)]
    assert size(rig) == 0


# -- stopping ----------------------------------------------------------------------------------


def test_a_second_stop_puts_the_running_job_back_first_in_line_with_its_attempt_refunded(
    rig: Rig, logs: Callable[[str], list[str]]
) -> None:
    running = rig.push(rig.gated())
    waiting = rig.push(rig.record())

    async def scenario() -> int:
        worker = rig.worker(concurrency=1, stop_when_empty=False)
        task = asyncio.create_task(worker.run())
        await eventually(lambda: rig.started(running), "the job to start")
        worker.request_stop()
        await asyncio.sleep(0.05)
        assert not task.done()  # the first stop waits for the running job
        worker.request_stop()
        return await finish(worker, task)

    assert asyncio.run(scenario()) == 0
    assert logs(f"BACK  {running}: put back on default for the next worker")
    assert rig.events() == [("start", running, 1)]  # the other job was not taken
    assert size(rig) == 2

    async def next_two() -> list[tuple[str, int]]:
        return [(item.job_id, item.attempts) for item in [await rig.take(), await rig.take()]]

    # Back first in line, with no try spent.
    assert asyncio.run(next_two()) == [(running, 1), (waiting, 1)]


def test_cancelling_the_worker_s_task_lets_the_running_job_finish_then_raises(rig: Rig) -> None:
    job_id = rig.push(rig.gated())
    later = rig.push(rig.record())

    async def scenario() -> tuple[bool, Worker]:
        worker = rig.worker(concurrency=1, stop_when_empty=False)
        task = asyncio.create_task(worker.run())
        await eventually(lambda: rig.started(job_id), "the job to start")
        task.cancel()
        await asyncio.sleep(0.05)
        rig.open_gate()
        return await cancelled(task), worker

    was_cancelled, worker = asyncio.run(scenario())
    assert was_cancelled  # CancelledError, once stopped
    assert rig.events() == [("start", job_id, 1), ("done", job_id, 1)]  # drained, not cut short
    assert worker.processed == 1
    assert size(rig) == 1  # acked; the job behind it was not taken
    assert asyncio.run(rig.take()).job_id == later


def test_cancelling_the_worker_s_task_twice_puts_the_running_job_back(
    rig: Rig, logs: Callable[[str], list[str]]
) -> None:
    job_id = rig.push(rig.gated())

    async def scenario() -> bool:
        worker = rig.worker(stop_when_empty=False)
        task = asyncio.create_task(worker.run())
        await eventually(lambda: rig.started(job_id), "the job to start")
        task.cancel()
        await asyncio.sleep(0.05)
        task.cancel()
        return await cancelled(task)

    assert asyncio.run(scenario())
    assert logs(f"BACK  {job_id}")
    assert size(rig) == 1
    assert asyncio.run(rig.take()).attempts == 1


class WakeReservingDriver(WatchedDriver):
    """A driver that reserves on wake-up (one round trip), whose client library finishes a wait
    it was told to cancel and reserves all the same (as redis-py may when the reply is already on
    its way). With ``hears_pushes`` off it only sleeps, so a push does not end its wait."""

    def __init__(self, store: MemoryStore, *, hears_pushes: bool) -> None:
        super().__init__(store)
        self.hears_pushes = hears_pushes
        self.woken_with: list[str] = []

    async def wait_and_reserve(
        self,
        queue: str,
        timeout_s: float,
        count: int,
        *,
        lease_s: float,
        default_tries: int,
        alone: bool = False,
    ) -> Batch:
        self.calls["wait_and_reserve"] += 1
        with contextlib.suppress(asyncio.CancelledError):  # the call goes on to its reply
            if self.hears_pushes:
                await self.store.wait([queue], timeout_s)
            else:
                await asyncio.sleep(timeout_s)
        batch = await self.reserve(
            queue, count, lease_s=lease_s, default_tries=default_tries, alone=alone
        )
        self.woken_with += [item.job_id for item in batch.jobs]
        return batch


def test_the_jobs_a_wake_up_reserved_are_run(rig: Rig) -> None:
    driver = rig.driver = WakeReservingDriver(rig.store, hears_pushes=True)

    async def scenario() -> tuple[int, str]:
        worker = rig.worker(stop_when_empty=False, sleep_s=LIMIT_S * 2)
        task = asyncio.create_task(worker.run())
        await eventually(lambda: driver.calls["wait_and_reserve"] == 1, "an idle worker")
        job_id = rig.push(rig.record())
        await eventually(lambda: rig.events() == [("done", job_id, 1)], "the job")
        worker.request_stop()
        return await finish(worker, task), job_id

    status, job_id = asyncio.run(scenario())
    assert status == 0
    assert driver.woken_with == [job_id]  # taken by the wake-up itself, not a reserve after it
    assert size(rig) == 0


def test_jobs_a_wake_up_reserved_as_the_worker_stopped_are_put_back(
    rig: Rig, logs: Callable[[str], list[str]]
) -> None:
    driver = rig.driver = WakeReservingDriver(rig.store, hears_pushes=False)

    async def scenario() -> tuple[int, str]:
        worker = rig.worker(stop_when_empty=False, sleep_s=LIMIT_S * 2)
        task = asyncio.create_task(worker.run())
        await eventually(lambda: driver.calls["wait_and_reserve"] == 1, "an idle worker")
        job_id = rig.push(rig.record())  # seen only by the wait, once it is cut short
        worker.request_stop()
        return await finish(worker, task), job_id

    status, job_id = asyncio.run(scenario())
    assert status == 0
    assert driver.woken_with == [job_id]
    assert logs(f"BACK  {job_id}: reserved as the worker stopped; put back")
    assert rig.events() == []
    assert asyncio.run(rig.take()).attempts == 1  # its attempt given back


# -- recovered jobs, limits --------------------------------------------------------------------


def test_a_job_recovered_from_a_dead_worker_runs_alone(
    rig: Rig, logs: Callable[[str], list[str]]
) -> None:
    recovered = rig.push(rig.gated())
    asyncio.run(rig.take(lease_s=10))  # its worker dies with it...
    rig.store.advance(11)  # ...and the lease expires

    async def scenario() -> tuple[int, str, list[tuple[str, str, int]]]:
        worker = rig.worker(concurrency=3, stop_when_empty=False)
        task = asyncio.create_task(worker.run())
        await eventually(lambda: rig.started(recovered), "the recovered job to start")
        fresh = rig.push(rig.record())  # wakes the worker, which has slots free
        await asyncio.sleep(0.2)  # room for a worker that broke the rule to take the fresh job
        while_alone = rig.events()
        rig.open_gate()
        await eventually(lambda: ("done", fresh, 1) in rig.events(), "the fresh job")
        worker.request_stop()
        return await finish(worker, task), fresh, while_alone

    status, fresh, while_alone = asyncio.run(scenario())
    assert status == 0
    assert logs(f"ALONE {recovered}: its last worker died running it")
    assert while_alone == [("start", recovered, 2)]
    assert rig.events() == [("start", recovered, 2), ("done", recovered, 2), ("done", fresh, 1)]
    assert [item.recovered for item in rig.driver.reserved] == [True, False]


def test_a_recovered_job_runs_alone_even_with_other_jobs_ready(rig: Rig) -> None:
    # It is handed out by itself however many slots are free (the memory driver used to fill
    # the batch up with ready jobs, which then ran beside it).
    recovered = rig.push(rig.gated())
    asyncio.run(rig.take(lease_s=10))
    rig.store.advance(11)
    fresh = [rig.push(rig.record()) for _ in range(2)]

    async def scenario() -> list[tuple[str, str, int]]:
        worker = rig.worker(concurrency=3)
        task = asyncio.create_task(worker.run())
        await eventually(lambda: rig.started(recovered), "the recovered job to start")
        await asyncio.sleep(0.2)
        while_alone = rig.events()
        rig.open_gate()
        assert await finish(worker, task) == 0
        return while_alone

    assert asyncio.run(scenario()) == [("start", recovered, 2)]
    assert sorted(job_id for event, job_id, _ in rig.events() if event == "done") == sorted(
        [recovered, *fresh]
    )


def test_a_delayed_job_runs_once_it_falls_due(rig: Rig) -> None:
    job_id = rig.push(rig.record(), delay_s=5)

    async def scenario() -> int:
        worker = rig.worker(stop_when_empty=False, sleep_s=LIMIT_S * 2)
        task = asyncio.create_task(worker.run())
        await eventually(lambda: rig.driver.calls["wait"] == 1, "an idle worker")
        assert rig.events() == []
        rig.store.advance(5)  # it falls due: that wakes the idle worker
        await eventually(lambda: rig.events() == [("done", job_id, 1)], "the delayed job")
        worker.request_stop()
        return await finish(worker, task)

    assert asyncio.run(scenario()) == 0


def test_max_jobs_stops_the_worker_after_that_many(rig: Rig) -> None:
    ids = [rig.push(rig.record()) for _ in range(5)]
    worker = rig.worker(concurrency=4, stop_when_empty=False, max_jobs=2)
    assert run(worker) == 0
    assert sorted(job_id for _, job_id, _ in rig.events()) == sorted(ids[:2])
    assert worker.processed == 2
    assert size(rig) == 3


def test_max_time_stops_an_idle_worker(rig: Rig) -> None:
    job_id = rig.push(rig.record())
    worker = rig.worker(stop_when_empty=False, max_time_s=0.3)
    assert run(worker) == 0  # within LIMIT_S, with the queue empty after the first job
    assert rig.events() == [("done", job_id, 1)]


def test_stop_when_empty_waits_for_a_running_job_that_puts_itself_back(rig: Rig) -> None:
    # The job fails and puts itself back while a reserve's reply is on its way: that reserve
    # found the queue empty, and by then nothing runs, yet the queue is not empty.
    rig.driver.reply_s = 0.05
    job_id = rig.push(FlakyThenOk(ledger=str(rig.ledger), fail_times=2))
    worker = rig.worker(concurrency=2)
    assert run(worker) == 0
    assert [(event, attempt) for event, _, attempt in rig.events()] == [
        ("start", 1),
        ("start", 2),
        ("start", 3),
        ("done", 3),
    ]
    assert {who for _, who, _ in rig.events()} == {job_id}
    assert size(rig) == 0


@pytest.mark.parametrize(("concurrency", "status"), [(1, EXIT_THREADS_STUCK), (2, 0)])
def test_timed_out_plain_def_jobs_holding_every_thread_end_the_worker_with_status_3(
    rig: Rig, logs: Callable[[str], list[str]], concurrency: int, status: int
) -> None:
    hung = rig.push(HangsInThread(ledger=str(rig.ledger), seconds=5), tries=1)
    behind = rig.push(rig.record())
    worker = rig.worker(concurrency=concurrency)
    assert run(worker) == status
    [failure] = rig.failures()
    assert failure.job_id == hung
    assert "JobTimeout" in failure.exception.splitlines()[0]
    ran_behind = ("done", behind, 1) in rig.events()
    if status == EXIT_THREADS_STUCK:
        assert logs("exits with status 3")
        assert logs("1 job thread(s) still running were abandoned")
        assert not ran_behind  # it took no more jobs
        assert size(rig) == 1
    else:  # a thread left to run jobs on: the worker goes on
        assert not logs("exits with status")
        assert ran_behind
        assert size(rig) == 0


# -- failures ----------------------------------------------------------------------------------


def test_a_failure_the_store_cannot_take_waits_in_the_outbox_and_is_recorded_later(
    rig: Rig, logs: Callable[[str], list[str]], tmp_path: Path
) -> None:
    rig.failed.close()
    url = f"sqlite:///{tmp_path / 'not-migrated-yet.sqlite3'}"
    rig.failed = FailedJobStore(url)  # its failed_jobs table does not exist yet
    job_id = rig.push(AlwaysFails(ledger=str(rig.ledger)), tries=1)

    async def scenario() -> int:
        worker = rig.worker(stop_when_empty=False)
        task = asyncio.create_task(worker.run())
        await eventually(lambda: len(logs("kept in the outbox")) >= 2, "a failure kept, twice")
        assert [item.job_id for item in rig.store.buried(QUEUE, 10)] == [job_id]
        await asyncio.to_thread(migrate, url)  # the store is back
        await eventually(lambda: rig.store.buried(QUEUE, 10) == [], "the outbox to empty")
        worker.request_stop()
        return await finish(worker, task)

    assert asyncio.run(scenario()) == 0
    [failure] = rig.failures()
    assert failure.job_id == job_id
    assert "always fails" in failure.exception
    assert logs(f"failed job {job_id} kept in the outbox until it can be recorded")
    assert [event for event, _, _ in rig.events()] == ["start", "hook:Boom"]  # its hook ran once


class RefusesOne(FailedJobStore):
    """A failed-job store that refuses one job's failure (a row it cannot store)."""

    def __init__(self, url: str, refused: str) -> None:
        super().__init__(url)
        self.refused = refused

    def record(self, failure: FailedJob) -> None:
        if failure.job_id == self.refused:
            raise FailedStoreError("this row cannot be stored")
        super().record(failure)


def test_a_failure_the_store_refuses_does_not_hold_up_those_behind_it(
    rig: Rig, logs: Callable[[str], list[str]]
) -> None:
    ids = [rig.push(rig.record()) for _ in range(2)]
    rig.failed.close()
    rig.failed = RefusesOne(rig.failed_url, refused=ids[0])

    async def scenario() -> None:
        for _ in ids:
            assert await rig.driver.bury(await rig.take(), f"{Boom.__module__}.Boom: broken")
        await rig.worker().sweep()

    asyncio.run(scenario())
    assert [failure.job_id for failure in rig.failures()] == [ids[1]]
    assert [item.job_id for item in rig.store.buried(QUEUE, 10)] == [ids[0]]  # kept, for later
    assert logs(f"failed job {ids[0]} kept in the outbox")


def test_a_job_whose_last_lease_expired_is_failed_by_the_sweep_with_its_hook_called_once(
    rig: Rig,
) -> None:
    job_id = rig.push(AlwaysFails(ledger=str(rig.ledger)), tries=1)
    asyncio.run(rig.take(lease_s=10))  # its only try; its worker dies
    rig.store.advance(11)

    async def scenario() -> None:
        worker = rig.worker()
        await worker.sweep()
        await worker.sweep()  # found no more: the first one recorded it

    asyncio.run(scenario())
    [failure] = rig.failures()
    assert failure.job_id == job_id
    assert failure.exception.startswith("runequeue.errors.LeaseExpired: ")
    assert rig.events() == [("hook:LeaseExpired", job_id, 0)]
    assert size(rig) == 0


@dataclasses.dataclass(frozen=True)
class BrokenCodec(Codec):
    """A codec with a bug: decoding raises something no payload error is."""

    def decode(self, raw: bytes) -> Envelope:
        raise RuntimeError("codec bug")


def test_a_job_whose_run_raises_outside_its_handler_is_failed_not_left_running(
    rig: Rig, logs: Callable[[str], list[str]]
) -> None:
    job_id = rig.push(rig.record())
    assert run(rig.worker(codec=BrokenCodec())) == 0
    assert logs(f"running {job_id} raised outside its handler")
    [failure] = rig.failures()
    assert (failure.job_id, failure.exception.splitlines()[0]) == (
        job_id,
        "builtins.RuntimeError: codec bug",
    )
    assert size(rig) == 0


def test_a_forced_stop_during_a_release_s_back_off_leaves_the_job_to_its_lease(
    rig: Rig, monkeypatch: pytest.MonkeyPatch, logs: Callable[[str], list[str]]
) -> None:
    monkeypatch.setattr(Backoff, "next_delay", lambda self: 3600.0)
    rig.store.fail("release", times=1_000_000)
    job_id = rig.push(FlakyThenOk(ledger=str(rig.ledger), fail_times=1))

    async def scenario() -> int:
        worker = rig.worker(stop_when_empty=False)
        task = asyncio.create_task(worker.run())
        await eventually(lambda: bool(logs("release failed")), "a failed release")
        worker.request_stop()
        worker.request_stop()  # an hour of back-off is not waited out
        return await finish(worker, task)

    assert asyncio.run(scenario()) == 0
    assert not logs("could not settle")
    assert rig.events() == [("start", job_id, 1)]
    assert size(rig) == 1  # still leased: it comes back when the lease expires


class ReleaseBug(WatchedDriver):
    """A driver whose release has a bug (it raises what no backend error is)."""

    async def release(self, item: Reserved, *, delay_s: float, refund: bool) -> bool:
        raise ValueError("driver bug")


def test_an_attempt_that_cannot_be_settled_runs_again_once_its_lease_expires(
    rig: Rig, logs: Callable[[str], list[str]]
) -> None:
    rig.driver = ReleaseBug(rig.store)
    job_id = rig.push(FlakyThenOk(ledger=str(rig.ledger), fail_times=1))
    assert run(rig.worker()) == 0
    assert logs(f"could not settle {job_id}; it runs again when its lease expires")
    assert size(rig) == 1

    async def after_the_lease() -> Reserved:
        rig.store.advance(31)
        return await rig.take()

    again = asyncio.run(after_the_lease())
    assert (again.job_id, again.attempts) == (job_id, 2)
