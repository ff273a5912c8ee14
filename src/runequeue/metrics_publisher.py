"""A worker's metrics, published to its backend every few seconds for the dashboard and
``rune workers``: its bucket of the current minute (`metrics_history`), its last attempts per
queue (`recent_jobs`), and, for its Prometheus endpoint, its queues' sizes and the number of
live workers, read back at the same pace so a scrape never waits on the backend.

Publishing never holds a job up: it runs beside the worker loop, and a flush that fails is
warned about and dropped (the next one carries the counts on, since buckets are cumulative
within their minute)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence

from runequeue import metrics_history, recent_jobs
from runequeue.drivers.base import Driver, QueueCounts, Reserved
from runequeue.metrics import JobMetrics
from runequeue.runner import Attempt
from runequeue.worker_control import live_workers
from runequeue.worker_options import WorkerOptions

log = logging.getLogger("runequeue.worker")

PURGE_INTERVAL_S = 600.0  # how often expired values of old namespaces are dropped


class MetricsPublisher:
    def __init__(
        self,
        driver: Driver,
        worker_id: str,
        metrics: JobMetrics,
        recent: recent_jobs.RecentJobs | None,
        *,
        queues: Sequence[str],
        read_back: bool = False,
        interval_s: float = metrics_history.FLUSH_INTERVAL_S,
    ) -> None:
        self.control = driver.control()
        self._driver = driver
        self.worker_id = worker_id
        self.metrics = metrics
        self.recent = recent  # None: publish nothing (``--no-metrics``), only read back
        self._queues = list(queues)
        self._read_back = read_back  # a Prometheus endpoint wants the figures below
        self._interval_s = interval_s
        self._buckets = metrics_history.MinuteBuckets()
        # The first purge waits an interval: a worker's start is no time for a write it does
        # not need (on SQLite every write holds the whole database for its moment).
        self._purged_at = time.time()
        self._read_at = 0.0
        self._read_took = 0.0
        self._failing = False
        # Read back at each flush when ``read_back``: for `prometheus.WorkerCollector`.
        self.queue_counts: dict[str, QueueCounts] = {}
        self.workers: int | None = None

    def saw(self, item: Reserved, attempt: Attempt, *, running: int) -> None:
        """Count one attempt (on the worker's loop: a few dictionary updates, no I/O)."""
        metrics = self.metrics
        metrics.running = running
        metrics.record(item.queue, attempt.job_name, attempt.status, attempt.duration_s,
                       attempt.waited_s)  # fmt: skip
        if self.recent is not None:
            try:
                self.recent.add(item, attempt)
            except Exception:  # an error that cannot be written out must not stop its settle
                log.exception("could not note %s among the recent jobs", item.job_id)

    async def flush(self) -> None:
        """Store what changed since the last flush, each part on its own: one that fails (the
        backend away, a value it refuses) is warned about once in a row of failures and
        dropped, and the others still go. Nothing raised here reaches the worker."""
        failures = []
        for step in (self._publish, self._read_figures_back):
            try:
                await step()
            except Exception as exc:  # never the worker's problem: its jobs go on
                failures.append(exc)
        if failures and not self._failing:
            log.warning("could not publish metrics (the dashboard's figures lag): %s",
                        "; ".join(str(exc) for exc in failures))  # fmt: skip
        elif not failures and self._failing:
            log.info("publishing metrics again")
        self._failing = bool(failures)

    async def _publish(self) -> None:
        if self.recent is None:
            return
        now = time.time()
        minute = self._buckets.add(self.metrics.snapshot(), now)
        if minute is not None:
            await metrics_history.store(self.control, self.worker_id, minute)
        for queue, jobs in self.recent.take_changed(self.worker_id).items():
            await recent_jobs.store(self.control, self.worker_id, queue, jobs)
        if now - self._purged_at >= PURGE_INTERVAL_S:
            self._purged_at = now
            await self.control.purge_expired()

    async def _read_figures_back(self) -> None:
        """Queue sizes and live workers for the Prometheus endpoint. Counting a big queue on a
        database is slow (about 80 ms a million jobs on PostgreSQL): it is read again only
        once 20 times what the last reading took has passed, so it stays a small share of the
        database's time however many workers count."""
        started = time.monotonic()
        if not self._read_back or started - self._read_at < 20 * self._read_took:
            return
        self.queue_counts = {queue: await self._driver.counts(queue) for queue in self._queues}
        self.workers = len(await live_workers(self.control))
        self._read_at = time.monotonic()
        self._read_took = self._read_at - started

    async def run(self, closing: asyncio.Event) -> None:
        """Flush at once (so figures read back are there for a first scrape), then every
        interval until ``closing`` (the worker flushes a last time as it stops)."""
        while not closing.is_set():
            await self.flush()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(closing.wait(), self._interval_s)


def publisher_for(
    driver: Driver, worker_id: str, options: WorkerOptions
) -> MetricsPublisher | None:
    """A worker's publisher: none when it neither publishes (``--no-metrics``) nor serves
    Prometheus metrics, so such a worker pays one ``is None`` check per job."""
    if not options.publish_metrics and options.metrics_port is None:
        return None
    return MetricsPublisher(
        driver, worker_id, JobMetrics(),
        recent_jobs.RecentJobs() if options.publish_metrics else None,
        queues=options.queues, read_back=options.metrics_port is not None,
    )  # fmt: skip
