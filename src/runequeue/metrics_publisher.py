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
from runequeue.drivers.base import Driver, QueueCounts
from runequeue.errors import DriverError
from runequeue.metrics import JobMetrics
from runequeue.worker_control import live_workers

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
        self._purged_at = 0.0
        self._failing = False
        # Read back at each flush when ``read_back``: for `prometheus.WorkerCollector`.
        self.queue_counts: dict[str, QueueCounts] = {}
        self.workers: int | None = None

    async def flush(self) -> None:
        """Store what changed since the last flush; a backend error is warned about once in a
        row of them, and the flush dropped."""
        try:
            await self._flush()
        except DriverError as exc:
            if not self._failing:
                log.warning("could not publish metrics (the dashboard's figures lag): %s", exc)
            self._failing = True
            return
        if self._failing:
            log.info("publishing metrics again")
        self._failing = False

    async def _flush(self) -> None:
        now = time.time()
        if self.recent is not None:
            minute = self._buckets.add(self.metrics.snapshot(), now)
            if minute is not None:
                await metrics_history.store(self.control, self.worker_id, minute)
            for queue, jobs in self.recent.take_changed(self.worker_id).items():
                await recent_jobs.store(self.control, self.worker_id, queue, jobs)
            if now - self._purged_at >= PURGE_INTERVAL_S:
                self._purged_at = now
                await self.control.purge_expired()
        if self._read_back:
            self.queue_counts = {queue: await self._driver.counts(queue) for queue in self._queues}
            self.workers = len(await live_workers(self.control))

    async def run(self, closing: asyncio.Event) -> None:
        """Flush at once (so figures read back are there for a first scrape), then every
        interval until ``closing`` (the worker flushes a last time as it stops)."""
        while not closing.is_set():
            await self.flush()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(closing.wait(), self._interval_s)
