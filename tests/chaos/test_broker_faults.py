"""Redis goes away: R3 (restart mid-run), R4 (no persistence), R5 (down at dispatch) and R7 (restart
while workers block waiting). Each test owns its redis-server, on a free loopback port."""

from __future__ import annotations

import asyncio
import signal
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from runequeue import DispatchError, Queue, QueueConfig
from runequeue.cli import cli
from tests.chaos.report import Result
from tests.support.jobs import Record, Sleepy, read_events
from tests.support.servers import OwnRedis
from tests.workers import run_worker, spawn_worker, wait_until


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[OwnRedis]:
    server = OwnRedis(tmp_path)
    server.start()
    yield server
    server.stop()


def _config(server: OwnRedis, sqlite_url: str) -> QueueConfig:
    return QueueConfig(driver="redis", redis_url=server.url, database_url=sqlite_url)


def test_r3_redis_crash_and_restart_mid_run(
    own_redis: OwnRedis, sqlite_url: str, results: list[Result], scale: int, tmp_path: Path
) -> None:
    config = _config(own_redis, sqlite_url)
    ledger = tmp_path / "ledger"
    jobs = 400 * scale
    ids = Queue.dispatch_many(
        config, [Sleepy(ledger=str(ledger), seconds=0.02) for _ in range(jobs)]
    )
    time.sleep(1.1)  # the AOF (appendfsync everysec) now holds every dispatch
    workers = [
        spawn_worker(config, "--concurrency", "4", "--sleep", "0.5", log=tmp_path / f"w{n}.log")
        for n in range(2)
    ]
    try:
        wait_until(lambda: len(read_events(ledger)) > 50, what="work to begin")
        own_redis.stop(signal.SIGKILL)  # a crash, not a shutdown
        time.sleep(2.0)
        own_redis.start()
        restarted = time.time()
        assert [w.poll() for w in workers] == [None, None]  # nobody exited
        wait_until(
            lambda: {e.job_id for e in read_events(ledger) if e.event == "done"} >= set(ids),
            timeout_s=60,
            what="every job",
        )
        finished_after_s = max(e.at for e in read_events(ledger)) - restarted
    finally:
        for worker in workers:
            worker.send_signal(signal.SIGTERM)
        codes = [w.wait(timeout=30) for w in workers]
    starts = Counter(e.job_id for e in read_events(ledger) if e.event == "start")
    duplicates = sum(starts.values()) - len(starts)
    results.append(
        Result("R3", "redis", jobs, "redis-server SIGKILLed mid-run, down 2 s (AOF everysec)", 0,
               duplicates, None,
               f"workers reconnected; all done {finished_after_s:.1f} s after the restart")
    )  # fmt: skip
    assert codes == [0, 0]
    assert duplicates <= 8  # at most the jobs in flight at the crash


def test_r4_startup_check_warns_and_strict_refuses(
    tmp_path: Path, sqlite_url: str, results: list[Result]
) -> None:
    server = OwnRedis(tmp_path, "--appendonly", "no", "--maxmemory-policy", "allkeys-lru")
    server.start()
    try:
        env = {"QUEUE_DRIVER": "redis", "REDIS_URL": server.url, "DATABASE_URL": sqlite_url}
        runner = CliRunner()
        relaxed = runner.invoke(cli, ["queue:work", "--stop-when-empty"], env=env)
        strict = runner.invoke(cli, ["queue:work", "--stop-when-empty", "--strict"], env=env)
    finally:
        server.stop()
    results.append(
        Result("R4", "redis", 0, "appendonly no, maxmemory-policy allkeys-lru", 0, 0, None,
               f"warned; --strict exit code {strict.exit_code}")
    )  # fmt: skip
    assert relaxed.exit_code == 0
    assert "no append-only file" in relaxed.output
    assert "allkeys-lru" in relaxed.output
    assert strict.exit_code != 0
    assert "refusing to start with --strict" in strict.output


def test_r5_dispatch_while_redis_is_down(
    own_redis: OwnRedis, sqlite_url: str, results: list[Result]
) -> None:
    config = _config(own_redis, sqlite_url)
    own_redis.stop()
    durations = []
    for _ in range(20):
        started = time.monotonic()
        with pytest.raises(DispatchError, match=own_redis.url.split("//")[1].split("/")[0]):
            Queue.dispatch(config, Record(ledger="unused"))
        durations.append(time.monotonic() - started)
    own_redis.start()
    Queue.dispatch(config, Record(ledger="unused"))  # same process, no restart needed
    phantoms = Queue.size(config) - 1
    results.append(
        Result("R5", "redis", 21, "server stopped; 20 dispatches", 0, phantoms, None,
               f"each raised DispatchError within {max(durations):.3f} s; 0 phantom jobs")
    )  # fmt: skip
    assert phantoms == 0


def test_r7_idle_worker_survives_a_restart_while_blocked(
    own_redis: OwnRedis, sqlite_url: str, results: list[Result], tmp_path: Path
) -> None:
    config = _config(own_redis, sqlite_url)
    ledger = tmp_path / "ledger"

    async def scenario() -> float:
        worker = asyncio.create_task(run_worker(config, stop_when_empty=False, sleep_s=1.0))
        await asyncio.sleep(0.5)  # blocked in BLPOP
        own_redis.stop(signal.SIGKILL)
        await asyncio.sleep(1.5)  # the blocked call fails; the worker backs off, never exits
        assert not worker.done()
        own_redis.start()
        dispatched = time.monotonic()
        await Queue.dispatch_async(config, Record(ledger=str(ledger)))
        await Queue.aclose_connections()
        while not read_events(ledger):
            await asyncio.sleep(0.02)
        latency = time.monotonic() - dispatched
        worker.cancel()
        # A cancelled worker stops gracefully and promptly (asyncio.wait, unlike wait_for, lets
        # no timeout pass for the cancellation it is waiting for).
        done, _ = await asyncio.wait([worker], timeout=5)
        assert done and worker.cancelled(), "the cancelled worker was still running 5 s later"
        return latency

    latency = asyncio.run(scenario())
    results.append(
        Result("R7", "redis", 1, "redis-server SIGKILLed while the worker blocks in BLPOP", 0, 0,
               None, f"job started {latency:.2f} s after dispatch once Redis was back")
    )  # fmt: skip
    assert latency <= 10
