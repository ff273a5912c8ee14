"""R26: a Redis at its memory limit stops dispatch, not work (issue 11, item 5).

Under ``maxmemory`` with ``noeviction`` the worker used to go blind: it could not renew leases, so
healthy jobs longer than a lease ran again and failed as lease-expired, and nothing in its log said
"out of memory". The scripts that take, renew, finish and fail jobs now carry ``allow-oom``: a full
Redis refuses new jobs (with a message saying so) while the worker drains what is queued, which
frees the memory. A worker that starts near the limit says so.
"""

from __future__ import annotations

import collections
import subprocess
from pathlib import Path

import pytest
import redis

from runequeue import Queue, QueueConfig
from runequeue.errors import DispatchError
from runequeue.schema import migrate
from tests.chaos.report import Result
from tests.support.jobs import Record, SleepThenFail, Sleepy, read_events
from tests.support.servers import OwnRedis
from tests.workers import failed_jobs, spawn_worker

LEASE_S = 2  # shorter than the jobs: only renewals keep them leased


def _fill(url: str) -> int:
    """Write junk keys until Redis refuses one; returns how many it took."""
    client = redis.Redis.from_url(url)
    written = 0
    try:
        while written < 20_000:  # 8 MB of 1 KB values: about 7,000, bounded whatever happens
            client.set(f"junk:{written}", b"x" * 1000)
            written += 1
    except redis.exceptions.OutOfMemoryError:
        return written
    finally:
        client.close()
    raise AssertionError("Redis never refused a write: maxmemory is not in force")


def test_r26_a_full_redis_refuses_jobs_and_finishes_the_queued_ones(
    small_redis: OwnRedis, tmp_path: Path, results: list[Result]
) -> None:
    sqlite_url = f"sqlite:///{tmp_path / 'failed.sqlite3'}"
    migrate(sqlite_url)
    config = QueueConfig(driver="redis", redis_url=small_redis.url, redis_prefix="r26",
                         database_url=sqlite_url, retry_after_s=LEASE_S)  # fmt: skip
    ledger = tmp_path / "ledger"
    healthy = Queue.dispatch_many(config, [Sleepy(ledger=str(ledger), seconds=5) for _ in range(4)])
    failing = Queue.dispatch(config, SleepThenFail(ledger=str(ledger), seconds=0.1))
    Queue.close_connections()
    junk = _fill(small_redis.url)
    with pytest.raises(DispatchError, match="is out of memory"):  # 64 KB: past the margin left
        Queue.dispatch(config, Record(ledger=str(ledger), tag="p" * 65536))
    Queue.close_connections()

    log = tmp_path / "worker.log"
    worker = spawn_worker(config, "--concurrency", "8", "--sleep", "0.2", "--stop-when-empty",
                          log=log)  # fmt: skip
    try:
        exit_code = worker.wait(timeout=60)
    except subprocess.TimeoutExpired:
        worker.kill()
        worker.wait()
        exit_code = None
    output = log.read_text(encoding="utf-8")

    starts = collections.Counter(e.job_id for e in read_events(ledger) if e.event == "start")
    done = {e.job_id for e in read_events(ledger) if e.event == "done"}
    failures = {f.job_id: f for f in failed_jobs(config)}
    results.append(
        Result("R26", "redis", 5, f"Redis full (maxmemory 8 MB, noeviction, {junk} junk keys) "
               f"before the worker started; jobs of 5 s on a {LEASE_S} s lease", 0,
               sum(starts.values()) - len(starts), None,
               f"dispatch refused as out of memory; {len(done & set(healthy))} of 4 healthy "
               f"finished, {len(failures)} failed (the failing one, with its cause)")
    )  # fmt: skip
    assert exit_code == 0, output[-3000:]
    assert "of its maxmemory" in output  # the warning at start
    assert set(healthy) <= done
    assert all(starts[job_id] == 1 for job_id in healthy), starts  # leases held: no re-run
    assert set(failures) == {failing}
    assert "Boom: failed after a while" in failures[failing].exception
