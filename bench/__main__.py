"""``python -m bench``: measure runequeue and every installed peer, interleaved, medians of rounds.

Writes the table into docs/benchmarks.md and a bar chart beside it (with --write-docs).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import time
from pathlib import Path

import redis

from bench.completion import DONE_KEY, LATENCY_KEY, REDIS_URL
from bench.libraries import Library, available
from bench.report import write_docs

ROOT = Path(__file__).resolve().parent.parent


def _redis() -> redis.Redis:
    return redis.Redis.from_url(REDIS_URL)


def _done() -> int:
    return int(_redis().get(DONE_KEY) or 0)


def _start_workers(library: Library, processes: int) -> list[subprocess.Popen[bytes]]:
    env = {**os.environ, **library.worker_env(), "PYTHONPATH": str(ROOT)}
    log = open(os.devnull, "wb")  # noqa: SIM115 - lives as long as the workers
    return [
        subprocess.Popen(library.worker_command(), cwd=ROOT, env=env, stdout=log, stderr=log)
        for _ in range(processes)
    ]


def _peak_rss_mib(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def _stop(workers: list[subprocess.Popen[bytes]]) -> None:
    for worker in workers:
        worker.terminate()
    for worker in workers:
        try:
            worker.wait(timeout=20)
        except subprocess.TimeoutExpired:
            worker.kill()


def enqueue_rate(library: Library, count: int, bulk: bool) -> float | None:
    library.clear()
    started = time.perf_counter()
    if bulk:
        if not library.enqueue_bulk(count):
            return None
    else:
        library.enqueue_one_by_one(count)
    rate = count / (time.perf_counter() - started)
    library.clear()
    return rate


def processing_rate(library: Library, count: int, processes: int) -> tuple[float, float]:
    """Jobs/s from the first completion to the last, and the workers' peak RSS in MiB."""
    library.clear()
    _redis().delete(DONE_KEY)
    if not library.enqueue_bulk(count):
        library.enqueue_one_by_one(count)
    workers = _start_workers(library, processes)
    try:
        while _done() == 0:
            time.sleep(0.002)
        first, started = _done(), time.perf_counter()
        deadline = started + 300
        while _done() < count and time.perf_counter() < deadline:
            time.sleep(0.005)
        rate = (_done() - first) / (time.perf_counter() - started)
        rss = max(_peak_rss_mib(worker.pid) for worker in workers)
    finally:
        _stop(workers)
        library.clear()
    return rate, rss


def latency_ms(library: Library, count: int) -> tuple[float, float]:
    """p50 and p99 from dispatch to handler start, one job at a time, with the worker idle."""
    library.clear()
    client = _redis()
    client.delete(DONE_KEY, LATENCY_KEY)
    workers = _start_workers(library, 1)
    try:
        library.enqueue_one_by_one(1)  # warm-up: the worker is up and idle after this
        while _done() == 0:
            time.sleep(0.01)
        client.delete(LATENCY_KEY)
        library.enqueue_one_by_one(count, timed=True)
        while client.llen(LATENCY_KEY) < count:
            time.sleep(0.01)
        samples = sorted(float(x) * 1000 for x in client.lrange(LATENCY_KEY, 0, -1))
    finally:
        _stop(workers)
        library.clear()
    return samples[len(samples) // 2], samples[int(len(samples) * 0.99) - 1]


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--jobs", type=int, default=20_000, help="jobs per processing run")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (median)")
    parser.add_argument("--write-docs", action="store_true", help="update docs/benchmarks.md")
    args = parser.parse_args()

    libraries = available()
    runs: dict[str, dict[str, list[float]]] = {lib.name: {} for lib in libraries}

    def note(lib: Library, metric: str, value: float | None) -> None:
        if value is not None:
            runs[lib.name].setdefault(metric, []).append(value)

    for round_number in range(1, args.rounds + 1):
        for lib in libraries:  # interleaved: each round visits every library in turn
            print(f"round {round_number}/{args.rounds}: {lib.name}", flush=True)
            note(lib, "enqueue/s", enqueue_rate(lib, 2_000, bulk=False))
            note(lib, "bulk enqueue/s", enqueue_rate(lib, 20_000, bulk=True))
            rate, rss = processing_rate(lib, args.jobs, 1)
            note(lib, "jobs/s, 1 process", rate)
            note(lib, "peak RSS MiB", rss)
            note(lib, "jobs/s, 2 processes", processing_rate(lib, args.jobs, 2)[0])
            p50, p99 = latency_ms(lib, 200)
            note(lib, "latency p50 ms", p50)
            note(lib, "latency p99 ms", p99)

    medians = {
        name: {metric: statistics.median(values) for metric, values in metrics.items()}
        for name, metrics in runs.items()
    }
    settings = {lib.name: lib.setting for lib in libraries}
    for name, metrics in medians.items():
        print(name, {k: round(v, 2) for k, v in metrics.items()})
    if args.write_docs:
        write_docs(medians, settings, jobs=args.jobs, rounds=args.rounds)


if __name__ == "__main__":
    main()
