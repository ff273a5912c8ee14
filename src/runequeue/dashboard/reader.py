"""What the dashboard shows, read from one backend: queues by state, the per-minute metrics and
recent jobs the workers publish, live workers, failed jobs and batches. Pages ask for what they
show and no more; nothing here renders HTML."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Callable, Sequence

from runequeue import metrics_history, recent_jobs
from runequeue.batch_state import BatchRecord
from runequeue.config import QueueConfig
from runequeue.drivers import open_driver
from runequeue.drivers.base import Driver, QueueCounts
from runequeue.failed_job import FailedJob
from runequeue.failed_jobs import FailedJobs, RetryOutcome
from runequeue.metrics_history import Minute, Totals
from runequeue.recent_jobs import RecentJob
from runequeue.worker_control import WorkerRecord, live_workers, pause, paused_queues, resume

log = logging.getLogger("runequeue.dashboard")

WINDOW_MINUTES = 60  # the charts' span
MAX_RETRY_ALL = 100_000  # failed jobs one "Retry all" puts back


@dataclasses.dataclass(frozen=True)
class QueueRow:
    name: str
    counts: QueueCounts
    counted_s_ago: float  # 0 unless the count was slow to read (`SlowCounts`)
    paused: bool
    last_hour: Totals
    wait_p50: float | None
    wait_p95: float | None
    failed_jobs: int


@dataclasses.dataclass(frozen=True)
class Overview:
    minutes: list[int]  # epoch minutes of the chart, oldest first
    per_minute: list[Totals]
    last_hour: Totals
    run_p95: float | None
    wait_p95: float | None
    queues: list[QueueRow]
    workers: list[WorkerRecord]
    failed_total: int


@dataclasses.dataclass(frozen=True)
class JobTimes:
    job: str
    totals: Totals
    p50: float | None
    p95: float | None
    p99: float | None


@dataclasses.dataclass(frozen=True)
class QueueDetail:
    row: QueueRow
    per_minute: list[Totals]
    minutes: list[int]
    jobs: list[JobTimes]
    recent: list[RecentJob]


class SlowCounts:
    """A queue's counts, read again in the background when reading them is slow.

    Counting a queue on a database scans its index range: about 80 ms for a million jobs on
    PostgreSQL. A count that took more than `SLOW_S` is shown as last read (with its age) while a
    fresh one is read beside the page, so a page never waits on a slow count twice in a row; a
    quick one (Redis, or a smaller queue) is read for every page.
    """

    SLOW_S = 0.02

    def __init__(self, driver: Callable[[], Driver]) -> None:
        self._driver = driver
        self._known: dict[str, tuple[QueueCounts, float, float]] = {}  # counts, read at, took
        self._reading: dict[str, asyncio.Task[None]] = {}

    async def get(self, queue: str) -> tuple[QueueCounts, float]:
        """The queue's counts, and how many seconds ago they were read."""
        known = self._known.get(queue)
        if known is None or known[2] <= self.SLOW_S:
            await self._read(queue)
            return self._known[queue][0], 0.0
        counts, read_at, _ = known
        if queue not in self._reading:
            task = asyncio.create_task(self._read_beside(queue))
            self._reading[queue] = task
            task.add_done_callback(lambda _: self._reading.pop(queue, None))
        return counts, time.monotonic() - read_at

    async def fresh(self, queue: str) -> QueueCounts:
        await self._read(queue)
        return self._known[queue][0]

    async def _read_beside(self, queue: str) -> None:
        try:
            await self._read(queue)
        except Exception as exc:  # the next page reads again; this one showed the last counts
            log.warning("dashboard: could not count %s: %s", queue, exc)

    async def _read(self, queue: str) -> None:
        started = time.monotonic()
        counts = await self._driver().counts(queue)
        self._known[queue] = (counts, time.monotonic(), time.monotonic() - started)

    async def close(self) -> None:
        for task in list(self._reading.values()):
            task.cancel()
        await asyncio.gather(*self._reading.values(), return_exceptions=True)


class DashboardReader:
    """One backend's figures. Opens the driver and the failed-job store lazily, on the event
    loop that first asks, and closes them in `close`."""

    def __init__(self, config: QueueConfig, *, queues: Sequence[str] = ()) -> None:
        self.config = config
        self._extra_queues = list(queues)
        self._driver: Driver | None = None
        self._failed: FailedJobs | None = None
        self.counts = SlowCounts(lambda: self.driver)

    @property
    def driver(self) -> Driver:
        if self._driver is None:
            self._driver = open_driver(self.config)
        return self._driver

    @property
    def failed(self) -> FailedJobs:
        if self._failed is None:
            self._failed = FailedJobs(self.config)
        return self._failed

    async def close(self) -> None:
        await self.counts.close()
        if self._driver is not None:
            await self._driver.close()
            self._driver = None
        if self._failed is not None:
            self._failed.close()
            self._failed = None

    # Reading.

    async def overview(self) -> Overview:
        minutes, first, last = await self._last_hour()
        workers = await live_workers(self.driver.control())
        queues = await self._queue_rows(minutes, workers)
        run = metrics_history.merged(s for m in minutes for s in m.run)
        wait = metrics_history.merged(s for m in minutes for s in m.wait)
        series = metrics_history.per_minute(minutes, first, last)
        return Overview(
            minutes=list(range(first, last + 1)), per_minute=series, last_hour=_sum(series),
            run_p95=metrics_history.quantile(run, 0.95),
            wait_p95=metrics_history.quantile(wait, 0.95), queues=queues, workers=workers,
            failed_total=sum(row.failed_jobs for row in queues),
        )  # fmt: skip

    async def queues(self, *, fresh: bool = False) -> list[QueueRow]:
        """Every queue worth showing; with ``fresh``, counts read now however long it takes
        (``/metrics``: a scrape wants the figure of its own moment)."""
        minutes, _, _ = await self._last_hour()
        workers = await live_workers(self.driver.control())
        return await self._queue_rows(minutes, workers, fresh=fresh)

    async def queue(self, name: str) -> QueueDetail:
        minutes, first, last = await self._last_hour()
        rows = await self._queue_rows(minutes, [], only=name)
        mine = minutes
        by_job: dict[str, list[metrics_history.Spread]] = {}
        for minute in mine:
            for spread in minute.run:
                if spread.queue == name:
                    by_job.setdefault(spread.job, []).append(spread)
        totals = metrics_history.totals_by(
            (Minute(m.minute, [c for c in m.counts if c.queue == name]) for m in mine), "job"
        )
        jobs = []
        for job, spreads in sorted(by_job.items()):
            p50, p95, p99 = metrics_history.quantiles(metrics_history.merged(spreads))
            jobs.append(JobTimes(job, totals.get(job, Totals()), p50, p95, p99))
        return QueueDetail(
            row=rows[0], per_minute=metrics_history.per_minute(minutes, first, last, name),
            minutes=list(range(first, last + 1)), jobs=jobs,
            recent=await recent_jobs.read(self.driver.control(), name),
        )  # fmt: skip

    async def workers(self) -> list[WorkerRecord]:
        return await live_workers(self.driver.control())

    async def failed_page(
        self, *, queue: str | None, job: str | None, text: str | None, page: int, per_page: int
    ) -> tuple[list[FailedJob], int]:
        return await asyncio.to_thread(
            self.failed.store.search, queue=queue, job=job, text=text, limit=per_page,
            offset=(page - 1) * per_page,
        )  # fmt: skip

    async def job(self, job_id: str) -> tuple[FailedJob | None, list[RecentJob]]:
        """A job by id: its failed-job row, if any, and its recent attempts on any known
        queue (newest first)."""
        rows = await asyncio.to_thread(self.failed.store.row_ids_of, job_id, 1)
        found = await asyncio.to_thread(self.failed.store.find, rows) if rows else []
        attempts = []
        for queue in await self.queue_names():
            for recent in await recent_jobs.read(self.driver.control(), queue):
                if recent.id == job_id:
                    attempts.append(recent)
        attempts.sort(key=lambda r: r.finished_at, reverse=True)
        return (found[0] if found else None), attempts

    async def batches(self, limit: int = 50) -> list[BatchRecord]:
        return await asyncio.to_thread(self.driver.batches().list_batches, limit)

    async def queue_names(self) -> list[str]:
        """Queues worth showing: the configured one, those named when the dashboard started,
        those live workers serve, those paused, those with failed jobs, and those with jobs in
        the last hour."""
        minutes, _, _ = await self._last_hour()
        workers = await live_workers(self.driver.control())
        paused = await paused_queues(self.driver.control())
        failed = await asyncio.to_thread(self.failed.store.counts_by_queue)
        return self._names(workers, minutes, paused, failed)

    def _names(
        self,
        workers: Sequence[WorkerRecord],
        minutes: Sequence[Minute],
        paused: frozenset[str],
        failed: dict[str, int],
    ) -> list[str]:
        names = {self.config.queue_name, *self._extra_queues, *paused, *failed}
        names.update(queue for worker in workers for queue in worker.queues)
        names.update(count.queue for minute in minutes for count in minute.counts)
        return sorted(names)

    # Acting.

    async def pause(self, queue: str) -> None:
        await pause(self.driver.control(), queue)

    async def resume(self, queue: str) -> None:
        await resume(self.driver.control(), queue)

    async def retry(self, row_ids: Sequence[int], *, queue: str | None) -> list[RetryOutcome]:
        """Retry the failed jobs with these row ids (ids only: never taken for uuid prefixes)."""
        return await asyncio.to_thread(self.failed.retry_rows, list(row_ids))

    async def retry_matching(
        self, *, queue: str | None, job: str | None, text: str | None
    ) -> list[RetryOutcome]:
        """Retry every failed job the failed-jobs search finds."""
        rows, _ = await asyncio.to_thread(self.failed.store.search, queue=queue, job=job,
                                          text=text, limit=MAX_RETRY_ALL)  # fmt: skip
        return await self.retry([row.id for row in rows], queue=queue)

    async def forget(self, row_ids: Sequence[int]) -> int:
        forgotten = 0
        for row_id in row_ids:
            forgotten += bool(await asyncio.to_thread(self.failed.store.forget, row_id))
        return forgotten

    # Helpers.

    async def _last_hour(self) -> tuple[list[Minute], int, int]:
        last = int(time.time() // 60)
        first = last - WINDOW_MINUTES + 1
        minutes = await metrics_history.read(self.driver.control(), first_minute=first,
                                             last_minute=last)  # fmt: skip
        return minutes, first, last

    async def _queue_rows(
        self,
        minutes: list[Minute],
        workers: Sequence[WorkerRecord],
        *,
        only: str | None = None,
        fresh: bool = False,
    ) -> list[QueueRow]:
        paused = await paused_queues(self.driver.control())
        failed = await asyncio.to_thread(self.failed.store.counts_by_queue)
        names = [only] if only is not None else self._names(workers, minutes, paused, failed)
        totals = metrics_history.totals_by(minutes, "queue")
        rows = []
        for name in names:
            wait = metrics_history.merged(s for m in minutes for s in m.wait if s.queue == name)
            if fresh:
                counts, age = await self.counts.fresh(name), 0.0
            else:
                counts, age = await self.counts.get(name)
            rows.append(QueueRow(
                name=name, counts=counts, counted_s_ago=age, paused=name in paused,
                last_hour=totals.get(name, Totals()), wait_p50=metrics_history.quantile(wait, 0.5),
                wait_p95=metrics_history.quantile(wait, 0.95), failed_jobs=failed.get(name, 0),
            ))  # fmt: skip
        return rows


def _sum(series: Sequence[Totals]) -> Totals:
    total = Totals()
    for totals in series:
        total.done += totals.done
        total.failed += totals.failed
        total.retried += totals.retried
        total.released += totals.released
    return total
