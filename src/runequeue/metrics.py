"""A worker's job metrics, aggregated in memory: counts by queue, job and outcome, and run-time and
wait-time distributions. Recording is a few dictionary updates per job (no lock, no I/O: the
worker records from its event loop); readers (the Prometheus exporter, in its own thread) take a
snapshot. Off unless asked for (``rune queue:work --metrics-port``), so a worker without it pays
one ``is None`` check per job."""

from __future__ import annotations

import bisect
import copy
import dataclasses
import math

from runequeue import job as job_registry

# Upper bounds of the duration buckets, in seconds (Prometheus's defaults, stretched to 5 minutes
# for long jobs and waits): enough for p50/p95/p99 by `histogram_quantile`.
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
           math.inf)  # fmt: skip

# An attempt's status (`runner.Attempt.status`) as the ``status`` label.
STATUS_LABELS = {"DONE": "done", "FAIL": "failed", "RETRY": "retried", "BACK": "released",
                 "WAIT": "deferred"}  # fmt: skip
UNKNOWN_JOB = "unknown"  # the label of a job name no class is registered under: payloads must
# not be able to mint labels (and so time series) at will


@dataclasses.dataclass
class Histogram:
    """Counts per `BUCKETS` bound (not cumulative), their sum and count."""

    counts: list[int] = dataclasses.field(default_factory=lambda: [0] * len(BUCKETS))
    total: float = 0.0
    count: int = 0

    def observe(self, seconds: float) -> None:
        self.counts[bisect.bisect_left(BUCKETS, seconds)] += 1
        self.total += seconds
        self.count += 1


@dataclasses.dataclass
class Snapshot:
    """The metrics at one moment, for a reader."""

    jobs: dict[tuple[str, str, str], int]  # (queue, job, status) -> count
    run_time: dict[tuple[str, str], Histogram]  # (queue, job)
    wait_time: dict[str, Histogram]  # queue
    running: int


@dataclasses.dataclass(slots=True)
class _Entry:
    """What one (queue, job, status) updates: its count, and the histograms it feeds."""

    count: int
    run: Histogram
    wait: Histogram


class JobMetrics:
    """One worker's metrics since it started.

    `record` runs on the worker's event loop, without a lock: one dictionary look-up, then a few
    additions (under a microsecond). A reader in another thread (`snapshot`) copies what it
    finds; a scrape taken mid-record may see one attempt counted and its duration not yet, which
    the next scrape puts right.
    """

    def __init__(self) -> None:
        self._entries: dict[tuple[str, str, str], _Entry] = {}
        self._run: dict[tuple[str, str], Histogram] = {}
        self._wait: dict[str, Histogram] = {}
        self.running = 0

    def record(
        self, queue: str, job_name: str, status: str, duration_s: float, waited_s: float
    ) -> None:
        """One attempt's outcome (``status`` as `runner.Attempt.status` says it)."""
        entry = self._entries.get((queue, job_name, status))
        if entry is None:
            entry = self._entry(queue, job_name, status)
        entry.count += 1
        run = entry.run
        run.counts[bisect.bisect_left(BUCKETS, duration_s)] += 1
        run.total += duration_s
        run.count += 1
        wait = entry.wait
        wait.counts[bisect.bisect_left(BUCKETS, waited_s)] += 1
        wait.total += waited_s
        wait.count += 1

    def _entry(self, queue: str, job_name: str, status: str) -> _Entry:
        job = job_name if job_registry.is_registered(job_name) else UNKNOWN_JOB
        run = self._run.get((queue, job))
        if run is None:
            run = self._run[queue, job] = Histogram()
        wait = self._wait.get(queue)
        if wait is None:
            wait = self._wait[queue] = Histogram()
        entry = self._entries[queue, job_name, status] = _Entry(0, run, wait)
        return entry

    def snapshot(self) -> Snapshot:
        entries = list(self._entries.items())  # (one C call: no change lands in the middle)
        jobs: dict[tuple[str, str, str], int] = {}
        for (queue, job_name, status), entry in entries:
            job = job_name if job_registry.is_registered(job_name) else UNKNOWN_JOB
            key = (queue, job, STATUS_LABELS.get(status, status.lower()))
            jobs[key] = jobs.get(key, 0) + entry.count
        run = {key: copy.deepcopy(histogram) for key, histogram in list(self._run.items())}
        wait = {key: copy.deepcopy(histogram) for key, histogram in list(self._wait.items())}
        return Snapshot(jobs, run, wait, self.running)
