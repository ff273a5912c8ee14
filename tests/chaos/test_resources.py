"""R30: open files and threads stay bounded over a long mixed run (issue 11, item 9).

A run of 60,000 jobs of which a third failed showed open fds 8 -> 30 and threads 4 -> 15, RSS
flat. Both come from pools, not leaks: this runs a worker over async jobs, thread jobs and jobs
that fail for good (a failed_jobs row each), samples /proc for its fds and threads, and checks
they stay under the bound docs/reliability.md states: pool sizes, whatever the run's length (a
leak of one fd per failure would pass it within the first hundred failures).
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from runequeue import Job, Queue, QueueConfig
from tests.chaos.report import Result
from tests.support.jobs import FailsAtOnce, NoopInThread, TypedUser
from tests.workers import failed_jobs, spawn_worker

CONCURRENCY = 10


def _helper_threads() -> int:
    """asyncio's default thread pool (``asyncio.to_thread``): every database call is made from
    it, so it bounds the connections each engine opens."""
    return min(32, (os.cpu_count() or 1) + 4)


def fd_bound(concurrency: int) -> int:
    """docs/reliability.md's bound on a worker's open fds: about 10 of its own (stdio, the log,
    the event loop's epoll and pipes), a Redis connection per job slot plus the blocking and
    heartbeat ones and a spare, and for each of two database engines (the jobs table, the
    failed-job store) a connection per helper thread plus the heartbeat's, 2 fds each (an SQLite
    file and its WAL; a PostgreSQL connection is one socket)."""
    return 10 + concurrency + 3 + 2 * 2 * (_helper_threads() + 1)


def thread_bound(concurrency: int) -> int:
    """...and on its threads: main, heartbeat, log flush and deadline ticker, a job thread per
    slot for plain ``def handle`` jobs, and the helper threads."""
    return 4 + concurrency + _helper_threads()


def _sample(pid: int) -> tuple[int, int] | None:
    try:
        return len(os.listdir(f"/proc/{pid}/fd")), len(os.listdir(f"/proc/{pid}/task"))
    except OSError:
        return None


@pytest.mark.parametrize("kind", ["redis", "database-sqlite", "database-postgresql"])
def test_r30_fds_and_threads_stay_bounded_over_a_mixed_run(
    kind: str,
    backend_for: Callable[[str], QueueConfig],
    results: list[Result],
    scale: int,
    tmp_path: Path,
) -> None:
    config = backend_for(kind)
    total = 6_000 * scale  # --soak: 60,000, the size of the run that found it
    jobs: list[Job] = []
    for n in range(total):
        kinds = (TypedUser(user_id=n), NoopInThread(n=n), FailsAtOnce(n=n))
        jobs.append(kinds[n % 3])
    Queue.dispatch_many(config, jobs)

    worker = spawn_worker(config, "--concurrency", str(CONCURRENCY), "--stop-when-empty",
                          log=tmp_path / "worker.log")  # fmt: skip
    samples: list[tuple[float, int, int]] = []
    started = time.monotonic()
    while worker.poll() is None and time.monotonic() - started < 100:
        sample = _sample(worker.pid)
        if sample is not None:
            samples.append((time.monotonic() - started, *sample))
        time.sleep(0.05)
    try:
        exit_code = worker.wait(timeout=10)
    except subprocess.TimeoutExpired:
        worker.kill()
        exit_code = None
    failed = len(failed_jobs(config))
    assert exit_code == 0, (tmp_path / "worker.log").read_text()[-2000:]
    assert len(samples) >= 8, "the run ended before it could be sampled"

    half = len(samples) // 2
    fds = [fd for _, fd, _ in samples]
    threads = [count for _, _, count in samples]
    results.append(
        Result("R30", kind, total, f"{total} jobs: async, thread and failing thirds, "
               f"concurrency {CONCURRENCY}", 0, 0, None,
               f"fds {fds[0]} -> max {max(fds)} (bound {fd_bound(CONCURRENCY)}), threads "
               f"{threads[0]} -> max {max(threads)} (bound {thread_bound(CONCURRENCY)}); max of "
               f"the run's first half / second half: fds {max(fds[:half])} / {max(fds[half:])}, "
               f"threads {max(threads[:half])} / {max(threads[half:])}")
    )  # fmt: skip
    assert failed == total // 3
    assert max(fds) <= fd_bound(CONCURRENCY), samples
    assert max(threads) <= thread_bound(CONCURRENCY), samples
