"""R29: a failover demotes the worker's Redis to a replica (issue 11, item 8).

A worker whose Redis was demoted used to spin on "You can't write against a read only replica",
never reconnecting. The Redis URL here leads through a proxy, as a managed endpoint or a DNS name
does: when the failover happens, the proxy sends new connections to the promoted replica while
the open ones stay on the old master. The worker must take READONLY as a failover: run no job it
could not acknowledge, reconnect, and carry on against the new master.
"""

from __future__ import annotations

import collections
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from runequeue import Queue, QueueConfig
from runequeue.schema import migrate
from tests.chaos.report import Result
from tests.support.jobs import Record, read_events
from tests.support.proxy import Proxy
from tests.support.servers import OwnRedis
from tests.workers import spawn_worker, wait_until


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[tuple[OwnRedis, OwnRedis]]:
    """A master and its replica, each a redis-server of the test's own."""
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    master = OwnRedis(tmp_path / "a", "--appendonly", "no")
    master.start()
    replica = OwnRedis(tmp_path / "b", "--appendonly", "no",
                       "--replicaof", "127.0.0.1", str(master.port))  # fmt: skip
    replica.start()
    yield master, replica
    replica.stop()
    master.stop()


def _client(server: OwnRedis) -> redis.Redis:
    return redis.Redis.from_url(server.url)


def _in_sync(master: OwnRedis, replica: OwnRedis) -> bool:
    info = _client(replica).info("replication")
    return bool(info.get("master_link_status") == "up") and (
        info.get("master_repl_offset") == _client(master).info("replication")["master_repl_offset"]
    )


def test_r29_a_demoted_redis_is_a_failover_the_worker_follows(
    pair: tuple[OwnRedis, OwnRedis], tmp_path: Path, results: list[Result]
) -> None:
    old, new = pair
    proxy = Proxy("127.0.0.1", old.port)
    sqlite_url = f"sqlite:///{tmp_path / 'failed.sqlite3'}"
    migrate(sqlite_url)
    config = QueueConfig(driver="redis", redis_url=f"redis://127.0.0.1:{proxy.port}/0",
                         database_url=sqlite_url, retry_after_s=10)  # fmt: skip
    ledger = tmp_path / "ledger"
    log = tmp_path / "worker.log"
    worker = spawn_worker(config, "--concurrency", "4", "--sleep", "0.5", log=log)
    try:
        before = Queue.dispatch_many(config, [Record(ledger=str(ledger)) for _ in range(10)])
        wait_until(lambda: len(read_events(ledger)) == 10, what="the first jobs")
        wait_until(lambda: _in_sync(old, new), what="the replica to catch up")

        # The failover: the replica is promoted, the old master follows it, the endpoint moves.
        _client(new).replicaof("NO", "ONE")
        _client(old).replicaof("127.0.0.1", new.port)
        proxy.point_to("127.0.0.1", new.port)
        Queue.close_connections()  # this process's own dispatch reconnects too
        after = Queue.dispatch_many(config, [Record(ledger=str(ledger)) for _ in range(20)])

        wait_until(lambda: len(read_events(ledger)) >= 30, timeout_s=30, what="the later jobs")
        worker.send_signal(signal.SIGTERM)
        exit_code = worker.wait(timeout=30)
    finally:
        worker.kill()
        proxy.close()
    output = log.read_text(encoding="utf-8")
    starts = collections.Counter(e.job_id for e in read_events(ledger))
    refusals = output.count("read-only replica")
    results.append(
        Result("R29", "redis", 30, "failover: the worker's Redis demoted to a replica, the "
               "endpoint moved to the promoted one", len(set(before + after) - set(starts)),
               sum(starts.values()) - len(starts), None,
               f"READONLY taken as a failover ({refusals} log lines), reconnected; no job run "
               "on the replica")
    )  # fmt: skip
    assert exit_code == 0, output[-3000:]
    assert set(starts) == set(before + after)
    assert all(count == 1 for count in starts.values())
    assert refusals >= 1  # the demotion was seen, and said as such
    assert refusals <= 10, output[-3000:]  # and not spun on
