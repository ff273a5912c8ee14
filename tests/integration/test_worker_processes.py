"""Workers as real processes: signals, crashes, leases and a Redis that goes away."""

from __future__ import annotations

import asyncio
import dataclasses
import signal
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from runequeue import Queue, QueueConfig
from runequeue.drivers.redis import QueueKeys
from tests.support.jobs import BlockingSleepy, Record, Sleepy, read_ledger
from tests.workers import failed_jobs, run_worker, spawn_worker, wait_until, work


def started(ledger: Path) -> list[str]:
    return [job_id for event, job_id, _, _ in read_ledger(ledger) if event == "start"]


def finished(ledger: Path) -> list[str]:
    return [job_id for event, job_id, _, _ in read_ledger(ledger) if event == "done"]


def test_sigterm_lets_running_jobs_finish_and_exits_zero(
    config: QueueConfig, tmp_path: Path
) -> None:
    ledger = tmp_path / "ledger"
    ids = Queue.dispatch_many(config, [Sleepy(ledger=str(ledger), seconds=1) for _ in range(3)])
    worker = spawn_worker(config, "--concurrency", "3", log=tmp_path / "worker.log")
    try:
        wait_until(lambda: len(started(ledger)) == 3, what="three jobs to start")
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(timeout=20) == 0
    finally:
        worker.kill()
    assert sorted(finished(ledger)) == sorted(ids)
    assert Queue.size(config) == 0


def test_sigterm_puts_unfinished_jobs_back_with_the_attempt_refunded(
    config: QueueConfig, tmp_path: Path
) -> None:
    ledger = tmp_path / "ledger"
    job_id = Queue.dispatch(config, Sleepy(ledger=str(ledger), seconds=60))
    worker = spawn_worker(config, "--shutdown-timeout", "0.5", log=tmp_path / "worker.log")
    try:
        wait_until(lambda: started(ledger) == [job_id], what="the long job to start")
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(timeout=20) == 0
    finally:
        worker.kill()
    assert finished(ledger) == []
    keys = QueueKeys.of(config.redis_prefix, "default")
    client = redis.Redis.from_url(config.redis_url)
    try:
        assert client.lrange(keys.ready, 0, -1) == [job_id.encode()]
        assert int(client.hget(keys.attempts, job_id) or 0) == 0
    finally:
        client.close()
    assert "BACK" in (tmp_path / "worker.log").read_text()


def test_heartbeat_keeps_the_lease_while_the_event_loop_is_blocked(
    config: QueueConfig, tmp_path: Path
) -> None:
    """The job blocks the worker's event loop for three leases; renewal runs in its own thread."""
    config = dataclasses.replace(config, retry_after_s=1.5)
    ledger = tmp_path / "ledger"
    job_id = Queue.dispatch(config, BlockingSleepy(ledger=str(ledger), seconds=4.5))
    worker = spawn_worker(config, "--max-jobs", "1", log=tmp_path / "first.log")
    wait_until(lambda: started(ledger) == [job_id], what="the job to start")
    # A second worker watches the queue for longer than three leases: it must never get the job.
    rival = spawn_worker(config, "--max-time", "6", "--sleep", "0.3", log=tmp_path / "rival.log")
    try:
        assert worker.wait(timeout=30) == 0
        assert rival.wait(timeout=30) == 0
    finally:
        worker.kill()
        rival.kill()
    assert started(ledger) == [job_id]
    assert finished(ledger) == [job_id]
    assert "LOST" not in (tmp_path / "first.log").read_text()


def test_job_that_kills_its_worker_every_time_is_failed_after_its_tries(
    config: QueueConfig, tmp_path: Path
) -> None:
    """Attempts are counted at reserve, so an expired lease with no tries left is not run again."""
    config = dataclasses.replace(config, retry_after_s=0.5)
    ledger = tmp_path / "ledger"
    job_id = Queue.dispatch(config, Sleepy(ledger=str(ledger), seconds=30), tries=2)
    for attempt in (1, 2):
        victim = spawn_worker(config, "--sleep", "0.2", log=tmp_path / f"victim{attempt}.log")
        try:
            wait_until(lambda n=attempt: len(started(ledger)) == n, what=f"attempt {attempt}")
            victim.send_signal(signal.SIGKILL)
            victim.wait(timeout=10)
        finally:
            victim.kill()
    work(config, stop_when_empty=False, max_time_s=2.0)
    assert len(started(ledger)) == 2
    failures = failed_jobs(config)
    assert [f.job_id for f in failures] == [job_id]
    assert failures[0].exception.startswith("runequeue.errors.LeaseExpired")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class OwnRedis:
    """A redis-server of the test's own, on a free loopback port, that it can stop and restart."""

    def __init__(self, directory: Path) -> None:
        self.port = _free_port()
        self.directory = directory
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        command = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
                   "--save", "", "--appendonly", "yes", "--dir", str(self.directory)]  # fmt: skip
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL)
        wait_until(self._answers, timeout_s=10, what="redis-server to start")

    def _answers(self) -> bool:
        try:
            return bool(redis.Redis.from_url(self.url, socket_connect_timeout=0.2).ping())
        except redis.RedisError:
            return False

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=10)
            self.process = None


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[OwnRedis]:
    server = OwnRedis(tmp_path)
    server.start()
    yield server
    server.stop()


def test_worker_survives_a_redis_restart(own_redis: OwnRedis, tmp_path: Path) -> None:
    config = QueueConfig(driver="redis", redis_url=own_redis.url, redis_prefix="restart")
    ledger = tmp_path / "ledger"

    async def scenario() -> None:
        worker = asyncio.create_task(run_worker(config, stop_when_empty=False, sleep_s=0.5))
        await asyncio.sleep(0.5)  # the worker is now blocked waiting for jobs
        own_redis.stop()
        await asyncio.sleep(1.0)  # it notices, and backs off instead of exiting
        assert not worker.done()
        own_redis.start()
        await Queue.dispatch_async(config, Record(ledger=str(ledger)))
        await Queue.aclose_connections()
        while not finished(ledger):
            await asyncio.sleep(0.05)
        worker.cancel()
        with pytest.raises(asyncio.CancelledError):
            await worker

    asyncio.run(asyncio.wait_for(scenario(), 30))
    assert len(finished(ledger)) == 1
