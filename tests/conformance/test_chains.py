"""Chains on every driver: steps run in order, one at a time; a step that fails for good stops the
chain and dispatches its catch job once; the hand-off is one atomic step with the ack, so a worker
killed mid-chain loses no step and runs none twice to the end."""

from __future__ import annotations

import asyncio
import dataclasses
import signal
from pathlib import Path

from runequeue import Bus, Queue, QueueConfig
from runequeue.chains import followers
from runequeue.drivers.base import Driver
from runequeue.payload import decode
from runequeue.retry import Ack
from tests.conformance.conftest import needs_other_processes
from tests.conformance.test_contract import with_driver
from tests.support.jobs import AlwaysFails, ChainLink, Record, read_ledger
from tests.workers import failed_jobs, spawn_worker, wait_until, work


def events(ledger: Path) -> list[str]:
    return [row[0] for row in read_ledger(ledger)]


def test_a_chain_runs_its_jobs_in_order_one_at_a_time(backend: QueueConfig, tmp_path: Path) -> None:
    ledger = str(tmp_path / "ledger")
    Bus.chain([ChainLink(ledger, "a"), ChainLink(ledger, "b"), ChainLink(ledger, "c")]).dispatch(
        backend
    )
    assert Queue.size(backend) == 1  # only the first step is queued

    work(backend, concurrency=4)

    assert events(tmp_path / "ledger") == [
        "start:a", "done:a", "start:b", "done:b", "start:c", "done:c",
    ]  # fmt: skip
    assert Queue.size(backend) == 0


def test_a_failed_step_stops_the_chain_and_dispatches_its_catch_once(
    backend: QueueConfig, tmp_path: Path
) -> None:
    ledger = str(tmp_path / "ledger")
    chain = Bus.chain([ChainLink(ledger, "a"), AlwaysFails(ledger), ChainLink(ledger, "c")])
    chain.on_queue("chained").catch(Record(ledger, tag="caught")).dispatch(backend)

    work(backend, queues=("chained",))

    assert events(tmp_path / "ledger") == [
        "start:a", "done:a", "start", "start", "hook:Boom", "caught",
    ]  # fmt: skip
    assert len(failed_jobs(backend)) == 1
    assert Queue.size(backend, "chained") == 0


def test_the_next_step_is_stored_with_the_ack_only_while_the_lease_is_held(
    backend: QueueConfig, tmp_path: Path
) -> None:
    ledger = str(tmp_path / "ledger")
    Bus.chain([ChainLink(ledger, "a"), ChainLink(ledger, "b")]).dispatch(backend)

    async def check(driver: Driver) -> None:
        (lost,) = (await driver.reserve("default", 1, lease_s=0.2, default_tries=3)).jobs
        then = followers(decode(lost.raw), Ack(), backend.codec)
        await asyncio.sleep(0.4)  # the lease expires; another worker takes the step
        await driver.recover("default", default_tries=3)
        assert not await driver.ack_then(lost, then)  # a stale worker stores nothing
        assert await driver.size("default") == 1

        (held,) = (await driver.reserve("default", 1, lease_s=30, default_tries=3,
                                        alone=True)).jobs  # fmt: skip
        assert await driver.ack_then(held, then)
        assert await driver.size("default") == 1  # a done, b queued
        assert await driver.push(then) == 0  # b's id is fixed: stored twice, stored once
        (b,) = (await driver.reserve("default", 1, lease_s=30, default_tries=3)).jobs
        assert b.job_id == then[0].job_id

    with_driver(backend, check)


def test_a_chain_survives_its_worker_killed_mid_step(backend: QueueConfig, tmp_path: Path) -> None:
    needs_other_processes(backend)
    config = dataclasses.replace(backend, retry_after_s=2)
    ledger = str(tmp_path / "ledger")
    steps = [ChainLink(ledger, tag, seconds=0.3) for tag in "abcd"]
    steps[1] = ChainLink(ledger, "b", seconds=1.5)
    Bus.chain(steps).dispatch(config)

    first = spawn_worker(config, "--sleep", "0.2", log=tmp_path / "first.log")
    try:
        wait_until(lambda: "start:b" in events(tmp_path / "ledger"), what="step b to start")
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=10)
    finally:
        first.kill()
    second = spawn_worker(config, "--max-jobs", "3", "--sleep", "0.2",
                          log=tmp_path / "second.log")  # fmt: skip
    try:
        assert second.wait(timeout=60) == 0
    finally:
        second.kill()

    seen = events(tmp_path / "ledger")
    # b ran again after its lease expired (at least once); every step finished once, in order.
    assert [event for event in seen if event.startswith("done:")] == [
        "done:a", "done:b", "done:c", "done:d",
    ]  # fmt: skip
    assert seen.count("start:b") == 2
    assert Queue.size(config) == 0
