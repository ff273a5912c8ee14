"""runequeue through Redis Sentinel: producers and workers find the master the Sentinels name, and
follow a failover by themselves; a master name the Sentinels do not know is refused clearly."""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from runequeue import Queue, QueueConfig
from runequeue.errors import DispatchError
from tests.conformance.test_wakeups import IDLE_SLEEP_S, done, idle_worker
from tests.conftest import missing
from tests.support.jobs import Record
from tests.support.servers import OwnSentinels
from tests.workers import wait_until

FAILOVER_BOUND_S = 30.0


@pytest.fixture
def sentinels(tmp_path: Path) -> Iterator[OwnSentinels]:
    group = OwnSentinels(tmp_path / "sentinel")
    try:
        group.start()
    except (OSError, RuntimeError) as exc:
        group.stop()
        missing(f"could not start Redis Sentinel: {exc}")
    try:
        yield group
    finally:
        group.stop()


@pytest.fixture
def sentinel_config(sentinels: OwnSentinels, sqlite_url: str) -> QueueConfig:
    return QueueConfig(driver="redis", redis_url=sentinels.url, database_url=sqlite_url)


def dispatch_until_stored(config: QueueConfig, job: Record) -> str:
    """Dispatch, again while the failover is still under way (each attempt fails in ~2 s)."""
    deadline = time.monotonic() + FAILOVER_BOUND_S
    while True:
        try:
            return Queue.dispatch(config, job)
        except DispatchError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def test_dispatch_and_work_go_to_the_master_the_sentinels_name(
    sentinels: OwnSentinels, sentinel_config: QueueConfig, tmp_path: Path
) -> None:
    ledger = tmp_path / "ledger"
    with idle_worker(sentinel_config):
        Queue.dispatch(sentinel_config, Record(ledger=str(ledger)))
        wait_until(lambda: done(ledger), IDLE_SLEEP_S, "the job")
    assert Queue.size(sentinel_config) == 0


def test_producer_and_worker_follow_a_failover(
    sentinels: OwnSentinels, sentinel_config: QueueConfig, tmp_path: Path
) -> None:
    before, after = tmp_path / "before", tmp_path / "after"
    with idle_worker(sentinel_config):
        Queue.dispatch(sentinel_config, Record(ledger=str(before)))
        wait_until(lambda: done(before), IDLE_SLEEP_S, "the job before the failover")
        time.sleep(1.5)  # its acknowledgement reaches the replica (replication is async)

        sentinels.master.stop(signal.SIGKILL)
        killed_at = time.monotonic()
        sentinels.wait_for_master(sentinels.replica.port, FAILOVER_BOUND_S)
        promoted_s = time.monotonic() - killed_at

        dispatch_until_stored(sentinel_config, Record(ledger=str(after)))
        wait_until(lambda: done(after), FAILOVER_BOUND_S, "the job after the failover")
        resumed_s = time.monotonic() - killed_at
    assert Queue.size(sentinel_config) == 0
    assert promoted_s < resumed_s < promoted_s + 15, (promoted_s, resumed_s)


def test_a_master_name_the_sentinels_do_not_know_is_refused_at_dispatch(
    sentinels: OwnSentinels, sqlite_url: str
) -> None:
    url = sentinels.url.replace(f"/{OwnSentinels.SERVICE}/", "/no-such-master/")
    config = QueueConfig(driver="redis", redis_url=url, database_url=sqlite_url)
    with pytest.raises(DispatchError, match="know no master by that name"):
        Queue.dispatch(config, Record(ledger="-"))
