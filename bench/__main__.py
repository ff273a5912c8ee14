"""``python -m bench``: measure runequeue and every installed peer, interleaved, medians of rounds.

Writes the table into docs/benchmarks.md and a bar chart beside it (with --write-docs). Run it
from its own virtualenv, .venv-bench (see README.md): arq there holds redis-py below 6.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
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


def _process_tree(pid: int) -> list[int]:
    """``pid`` and its descendants: taskiq's and dramatiq's commands run the jobs in a child."""
    pids = [pid]
    for parent in pids:  # grows as it goes: breadth first
        for children in Path(f"/proc/{parent}/task").glob("*/children"):
            try:
                pids += [int(child) for child in children.read_text().split()]
            except OSError:  # the process has gone
                continue
    return pids


def _peak_rss_mib(pid: int) -> float:
    """The largest high-water mark in the worker's process tree: the process that runs the jobs."""
    peak = 0.0
    for member in _process_tree(pid):
        try:
            for line in Path(f"/proc/{member}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    peak = max(peak, int(line.split()[1]) / 1024)
        except OSError:
            continue
    return peak


def _stop(workers: list[subprocess.Popen[bytes]]) -> None:
    children = [pid for worker in workers for pid in _process_tree(worker.pid)[1:]]
    for worker in workers:
        worker.terminate()
    for worker in workers:
        try:
            worker.wait(timeout=20)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait()
    # A supervisor that was killed, or that exits before its children, would leave them to
    # run on, and a child still blocked in a BRPOP can swallow the next run's first job.
    for pid in children:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while any(_alive(pid) for pid in children) and time.monotonic() < deadline:
        time.sleep(0.01)


def _alive(pid: int) -> bool:
    """Still running: neither gone nor a zombie (whose sockets are already closed)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


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
    parser.add_argument("--jobs", type=int, default=40_000, help="jobs per processing run")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (median)")
    parser.add_argument("--write-docs", action="store_true", help="update docs/benchmarks.md")
    parser.add_argument("--only", metavar="NAME[,NAME]", help="measure only these libraries")
    args = parser.parse_args()

    libraries = available()
    if args.only:
        if args.write_docs:  # the docs' table compares every library
            parser.error("--only and --write-docs do not go together")
        wanted = set(args.only.split(","))
        names = [lib.name for lib in libraries]
        if unknown := wanted - set(names):
            parser.error(f"not available: {', '.join(sorted(unknown))} (have {', '.join(names)})")
        libraries = [lib for lib in libraries if lib.name in wanted]
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
