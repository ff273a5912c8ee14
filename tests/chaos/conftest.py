"""Chaos fixtures: scale (``--soak``), the results table, and a fleet of worker processes."""

from __future__ import annotations

import functools
import random
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from runequeue import QueueConfig
from tests.chaos import report
from tests.support.servers import OwnRedis
from tests.workers import spawn_worker, wait_until

_results: list[report.Result] = []


@pytest.fixture(scope="session")
def results(request: pytest.FixtureRequest) -> Iterator[list[report.Result]]:
    yield _results
    if request.config.getoption("--reliability-report") and _results:
        report.write(_results)


@pytest.fixture
def small_redis(tmp_path: Path) -> Iterator[OwnRedis]:
    """A Redis of the test's own with 8 MB of memory, refusing writes when full (noeviction)."""
    server = OwnRedis(tmp_path, "--appendonly", "no", "--maxmemory", "8mb",
                      "--maxmemory-policy", "noeviction")  # fmt: skip
    server.start()
    yield server
    server.stop()


@pytest.fixture
def scale(request: pytest.FixtureRequest) -> int:
    return 10 if request.config.getoption("--soak") else 1


class Fleet:
    """Worker processes the test can kill at random and restart, as a supervisor would."""

    def __init__(self, config: QueueConfig, size: int, args: list[str], logs: Path) -> None:
        self.config = config
        self.args = args
        self.logs = logs
        self.workers: list[subprocess.Popen[bytes]] = []
        self._log_of: dict[int, Path] = {}  # pid -> that worker's log
        self.kills: list[tuple[int, float]] = []  # (pid, wall time)
        self.restarts = 0
        for _ in range(size):
            self._spawn()

    def _spawn(self) -> subprocess.Popen[bytes]:
        log = self.logs / f"worker-{len(self.workers) + self.restarts}.log"
        worker = spawn_worker(self.config, *self.args, log=log)
        self.workers.append(worker)
        self._log_of[worker.pid] = log
        return worker

    def kill_one(self, rng: random.Random) -> int:
        worker = rng.choice([w for w in self.workers if w.poll() is None])
        self.kills.append((worker.pid, time.time()))
        worker.send_signal(signal.SIGKILL)
        worker.wait(timeout=10)
        return worker.pid

    def restart_dead(self) -> int:
        dead = [w for w in self.workers if w.poll() is not None]
        for worker in dead:
            self.workers.remove(worker)
            self.restarts += 1
            self._spawn()
        return len(dead)

    def stop(self) -> list[int | None]:
        """SIGTERM every worker once it is up, and their exit statuses.

        A worker restarted just before may still be starting its interpreter, before any Python
        code can catch a signal: SIGTERM would kill it (-15), which is not what is tested here.
        """
        for worker in self.workers:
            wait_until(functools.partial(self._up_or_gone, worker), 30, f"worker {worker.pid}")
        for worker in self.workers:
            if worker.poll() is None:
                worker.send_signal(signal.SIGTERM)
        codes: list[int | None] = []
        for worker in self.workers:
            try:
                codes.append(worker.wait(timeout=30))
            except subprocess.TimeoutExpired:
                worker.kill()
                codes.append(None)
        return codes

    def _up_or_gone(self, worker: subprocess.Popen[bytes]) -> bool:
        if worker.poll() is not None:
            return True
        return "worker started" in self._log_of[worker.pid].read_text(errors="replace")

    def log_text(self) -> str:
        return "".join(path.read_text() for path in sorted(self.logs.glob("worker-*.log")))


@pytest.fixture
def fleet_factory(tmp_path: Path) -> Iterator[list[Fleet]]:
    fleets: list[Fleet] = []
    yield fleets
    for fleet in fleets:
        for worker in fleet.workers:
            worker.kill()
