"""``python -m bench.cpu``: where the CPU goes per no-op job, for one worker process and for two.

Reads the workers' and redis-server's CPU time from /proc while they drain a queue, and prints
each one's share of a core and the CPU microseconds per job. This is what bounds the two-process
speed-up on a small machine: the workers and Redis share its cores.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import time

import redis

from bench.__main__ import ROOT
from bench.completion import DONE_KEY, REDIS_URL
from bench.libraries import RuneQueue

TICKS_PER_S = os.sysconf("SC_CLK_TCK")
MARGIN = 2_000  # jobs left out at each end: start-up and drain are not the steady state


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of process ``pid``."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS_PER_S


def redis_server_pid(client: redis.Redis) -> int:
    return int(client.info("server")["process_id"])


def measure(processes: int, jobs: int) -> str:
    library, client = RuneQueue(), redis.Redis.from_url(REDIS_URL)
    library.clear()
    client.delete(DONE_KEY)
    library.enqueue_bulk(jobs)
    env = {**os.environ, **library.worker_env(), "PYTHONPATH": str(ROOT)}
    workers = [
        subprocess.Popen(library.worker_command(), cwd=ROOT, env=env,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(processes)
    ]  # fmt: skip
    server = redis_server_pid(client)

    def done() -> int:
        return int(client.get(DONE_KEY) or 0)

    try:
        while done() < MARGIN:
            time.sleep(0.002)
        first, started = done(), time.perf_counter()
        before = [cpu_seconds(w.pid) for w in workers], cpu_seconds(server)
        while done() < jobs - MARGIN:
            time.sleep(0.005)
        elapsed, count = time.perf_counter() - started, done() - first
        after = [cpu_seconds(w.pid) for w in workers], cpu_seconds(server)
    finally:
        for worker in workers:
            worker.terminate()
        for worker in workers:
            worker.wait(30)
        library.clear()
    worker_cpu = [b - a for a, b in zip(before[0], after[0], strict=True)]
    server_cpu = after[1] - before[1]
    shares = ", ".join(f"{used / elapsed:.0%}" for used in worker_cpu)
    return (
        f"{processes} process(es): {count / elapsed:,.0f} jobs/s; worker CPU {shares} of a core, "
        f"redis-server {server_cpu / elapsed:.0%}; per job: workers "
        f"{sum(worker_cpu) / count * 1e6:.1f} µs, redis-server {server_cpu / count * 1e6:.1f} µs"
    )


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.cpu", description=__doc__)
    parser.add_argument("--jobs", type=int, default=150_000, help="jobs per run")
    args = parser.parse_args()
    for processes in (1, 2):
        print(measure(processes, args.jobs), flush=True)


if __name__ == "__main__":
    main()
