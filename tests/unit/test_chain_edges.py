"""Chains beyond the conformance suite: inline on the sync driver, a tampered or too-new envelope
(failed, kept, never run), the catch of a step failed by its lease, and what a chain refuses."""

from __future__ import annotations

import asyncio
from pathlib import Path

import msgspec
import pytest

from runequeue import Bus, ConfigError, Queue, QueueConfig
from runequeue.drivers.base import Outgoing
from runequeue.drivers.memory import MemoryDriver, default_store
from runequeue.payload import NEWEST_VERSION, decode
from tests.support.jobs import AlwaysFails, Boom, ChainLink, Record, read_ledger
from tests.workers import failed_jobs, push_raw, work


def events(ledger: Path) -> list[str]:
    return [row[0] for row in read_ledger(ledger)]


@pytest.fixture
def memory(sqlite_url: str) -> QueueConfig:
    default_store().reset()
    return QueueConfig(driver="memory", database_url=sqlite_url)


def test_the_sync_driver_runs_a_whole_chain_in_order(sqlite_url: str, tmp_path: Path) -> None:
    sync = QueueConfig(driver="sync", database_url=sqlite_url)
    ledger = str(tmp_path / "ledger")
    Bus.chain([ChainLink(ledger, "a"), ChainLink(ledger, "b")]).dispatch(sync)
    assert events(tmp_path / "ledger") == ["start:a", "done:a", "start:b", "done:b"]


def test_the_sync_driver_runs_the_catch_job_and_raises_the_step_s_error(
    sqlite_url: str, tmp_path: Path
) -> None:
    sync = QueueConfig(driver="sync", database_url=sqlite_url)
    ledger = str(tmp_path / "ledger")
    chain = Bus.chain([AlwaysFails(ledger), ChainLink(ledger, "never")])
    with pytest.raises(Boom):
        chain.catch(Record(ledger, tag="caught")).dispatch(sync)
    assert events(tmp_path / "ledger") == ["start", "hook:Boom", "caught"]


def test_a_tampered_chain_fails_its_job_and_runs_nothing_of_it(
    memory: QueueConfig, tmp_path: Path
) -> None:
    ledger = str(tmp_path / "ledger")
    Bus.chain([ChainLink(ledger, "a"), ChainLink(ledger, "b")]).dispatch(memory)
    (item,) = default_store().reserve("default", 1, lease_s=30, default_tries=3, alone=False,
                                      max_payload_bytes=10**6).jobs  # fmt: skip
    document = msgspec.json.decode(item.raw)
    document["chain"]["next"] = [{"id": 7}]  # not a step
    default_store().reset()
    push_raw(memory, [Outgoing(item.job_id, "default", msgspec.json.encode(document))])

    work(memory)

    assert events(tmp_path / "ledger") == []
    [failure] = failed_jobs(memory)
    assert failure.exception.startswith("runequeue.errors.InvalidPayload: malformed job payload")
    assert Queue.size(memory) == 0


def test_an_envelope_newer_than_the_worker_is_failed_saying_so(
    memory: QueueConfig, tmp_path: Path
) -> None:
    Queue.dispatch(memory, Record(str(tmp_path / "ledger")))
    (item,) = default_store().reserve("default", 1, lease_s=30, default_tries=3, alone=False,
                                      max_payload_bytes=10**6).jobs  # fmt: skip
    document = msgspec.json.decode(item.raw)
    document["v"] = NEWEST_VERSION + 1
    default_store().reset()
    push_raw(memory, [Outgoing(item.job_id, "default", msgspec.json.encode(document))])

    work(memory)

    [failure] = failed_jobs(memory)
    assert "newer than this worker reads" in failure.exception.splitlines()[0]


def test_the_catch_of_a_step_whose_worker_died_on_its_last_try_is_dispatched_once(
    memory: QueueConfig, tmp_path: Path
) -> None:
    ledger = str(tmp_path / "ledger")
    Bus.chain([ChainLink(ledger, "a"), ChainLink(ledger, "b")]).catch(
        Record(ledger, tag="caught")
    ).dispatch(memory)
    store = default_store()
    # Its worker takes the step on its last try and dies: the lease runs out.
    store.reserve("default", 1, lease_s=1, default_tries=1, alone=False, max_payload_bytes=10**6)
    store.advance(5)

    work(memory, tries=1, stop_when_empty=False, max_jobs=1, max_time_s=10, sleep_s=0.05,
         sweep_interval_s=0.05)  # fmt: skip

    assert events(tmp_path / "ledger") == ["caught"]
    [failure] = failed_jobs(memory)
    assert failure.exception.startswith("runequeue.errors.LeaseExpired")


def test_a_chain_s_jobs_must_share_a_connection(memory: QueueConfig, tmp_path: Path) -> None:
    class Elsewhere(Record, name="tests.chain.Elsewhere"):
        connection = "redis"

    with pytest.raises(ConfigError, match="one connection"):
        Bus.chain([Record(str(tmp_path)), Elsewhere(str(tmp_path))]).dispatch(memory)
    assert Queue.size(memory) == 0


def test_every_step_is_checked_at_dispatch(memory: QueueConfig, tmp_path: Path) -> None:
    from runequeue import InvalidPayload

    with pytest.raises(InvalidPayload):
        Bus.chain([Record(str(tmp_path)), Record(ledger=42)]).dispatch(memory)  # type: ignore[arg-type]
    assert Queue.size(memory) == 0


def test_a_plain_job_s_envelope_has_no_chain_in_it(memory: QueueConfig, tmp_path: Path) -> None:
    Queue.dispatch(memory, Record(str(tmp_path)))
    (item,) = asyncio.run(MemoryDriver().reserve("default", 1, lease_s=30, default_tries=3)).jobs
    assert b"chain" not in item.raw
    assert decode(item.raw).v == 1
