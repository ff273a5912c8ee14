"""The worker: reserve -> run -> ack | release | fail, up to N jobs at once.

The loop (`Worker._work`) fits on a screen; the per-job path is `Worker._process`; what to do after
an attempt is `retry.decide`. Broker errors never end the loop: it backs off and tries again, so a
Redis restart costs a pause, not a dead worker.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import logging
import random
import signal
import time
from collections.abc import Awaitable, Callable, Sequence

from runequeue import startup
from runequeue.config import QueueConfig
from runequeue.deadlines import Deadlines
from runequeue.drivers import open_driver
from runequeue.drivers.base import Batch, Driver, Reserved
from runequeue.errors import BackendFull, DriverError
from runequeue.failed import FailedJob, FailedJobStore
from runequeue.heartbeat import Heartbeat
from runequeue.job import Backoff
from runequeue.logs import Recurring
from runequeue.outbox import FailureOutbox
from runequeue.payload import Codec
from runequeue.retry import Ack, Defer, Release
from runequeue.runner import (
    DEFAULT_CODEC,
    Attempt,
    JobDefaults,
    log_attempt,
    run_attempt,
    unexpected_failure,
)
from runequeue.threads import DaemonThreadPool

log = logging.getLogger("runequeue.worker")


@dataclasses.dataclass(frozen=True)
class WorkerOptions:
    """How a worker runs; the ``rune queue:work`` flags.

    Attributes:
        queues: queue names in priority order: the first is drained before the next is looked at.
        concurrency: jobs run at once (plain ``def handle`` jobs run in as many threads).
        tries, timeout_s, backoff: defaults for jobs that set none.
        sleep_s: longest wait for new work before looking again (a new job wakes it at once).
        max_jobs, max_time_s: stop after this many jobs or seconds (a supervisor restarts it).
        stop_when_empty: stop once the queues are empty and running jobs are done.
        shutdown_timeout_s: on SIGTERM, how long running jobs may finish before they are put back.
        lease_s: lease length (``QUEUE_RETRY_AFTER``); renewed every ``lease_s / 3``.
        sweep_interval_s: how often expired leases and due delayed jobs are recovered when no
            reserve does it, and failed jobs waiting in the outbox are recorded.
        strict: refuse to start when the backend cannot be reached or could lose jobs (no
            persistence, eviction).
    """

    queues: tuple[str, ...] = ("default",)
    concurrency: int = 10
    tries: int = 3
    timeout_s: float | None = 60.0
    backoff: Backoff = 0
    sleep_s: float = 3.0
    max_jobs: int | None = None
    max_time_s: float | None = None
    stop_when_empty: bool = False
    shutdown_timeout_s: float = 25.0
    lease_s: float = 30.0
    sweep_interval_s: float = 5.0
    strict: bool = False

    @functools.cached_property
    def defaults(self) -> JobDefaults:
        return JobDefaults(tries=self.tries, timeout_s=self.timeout_s, backoff=self.backoff)


class _Backoff:
    """Jittered exponential back-off for broker errors: 0.1 s doubling to 10 s."""

    def __init__(self) -> None:
        self.failures = 0

    def next_delay(self) -> float:
        self.failures += 1
        return random.uniform(0.5, 1.0) * min(10.0, 0.1 * 2.0 ** (self.failures - 1))

    def reset(self) -> None:
        self.failures = 0


class Worker:
    """Processes jobs from ``driver`` until stopped; failures go to ``failed_store``."""

    def __init__(
        self,
        driver: Driver,
        failed_store: FailedJobStore,
        options: WorkerOptions,
        *,
        connection: str,
        codec: Codec = DEFAULT_CODEC,
    ) -> None:
        self.driver = driver
        self.failed_store = failed_store
        self.options = options
        self.connection = connection
        self.codec = codec
        self.processed = 0
        self._started_at = time.monotonic()
        self._reserved_total = 0
        self._running: dict[str, asyncio.Task[None]] = {}
        self._lost: set[str] = set()
        self._stop = asyncio.Event()
        self._force = asyncio.Event()
        self._slot_free = asyncio.Event()
        self._closing = asyncio.Event()
        self._outbox = FailureOutbox(driver, failed_store, connection=connection, codec=codec)
        self._idle_task: asyncio.Future[Batch | None] | None = None
        self._acks: asyncio.Queue[Reserved | None] = asyncio.Queue()
        # A job recovered from a dead worker runs alone (`Driver.reserve`): the one running now,
        # and whether others wait for this worker to have nothing else running.
        self._alone: str | None = None
        self._recovered_waiting = False
        self._broker_backoff = _Backoff()
        self._backend_full = Recurring()  # "out of memory" comes back at every try: not every line
        # Daemon threads: a handler that outlived its timeout must not keep the process alive.
        self._executor = DaemonThreadPool(options.concurrency, name="runequeue-job")
        self._heartbeat = Heartbeat(
            driver.lease_keeper(),
            lease_s=options.lease_s,
            interval_s=options.lease_s / 3,
            on_lost=self._lease_lost_from_thread,
        )
        self._loop: asyncio.AbstractEventLoop | None = None
        self._deadlines = Deadlines()

    async def run(self) -> int:
        """Work until a signal, a limit or (``stop_when_empty``) an empty queue; returns 0."""
        self._loop = asyncio.get_running_loop()
        self._install_signal_handlers()
        self._heartbeat.start()
        background = [
            asyncio.create_task(self._ack_loop()),
            asyncio.create_task(self._sweep_loop()),
        ]
        log.info("worker started: queues %s, concurrency %d", ",".join(self.options.queues),
                 self.options.concurrency)  # fmt: skip
        try:
            await self._work()
        finally:
            await self._drain()
            await self._stop_background(background)
            await self._outbox.flush(self.options.queues)
            self._heartbeat.stop()
            await self._deadlines.close()
            self._abandon_threads()
            self._remove_signal_handlers()
        log.info("worker stopped after %d job(s)", self.processed)
        return 0

    def _abandon_threads(self) -> None:
        """Stop the job threads without waiting: one still running holds a handler that timed out
        (or was put back on shutdown), and a thread cannot be stopped; it ends with the process."""
        running = self._executor.running
        self._executor.shutdown(wait=False, cancel_futures=True)
        if running:
            log.warning("%d job thread(s) still running were abandoned (their attempts have "
                        "already timed out or been put back)", running)  # fmt: skip

    def request_stop(self) -> None:
        """Stop taking jobs; running ones finish (a second call puts them back at once)."""
        if self._stop.is_set():
            self._force.set()
        self._stop.set()
        self._slot_free.set()
        if self._idle_task is not None:
            self._idle_task.cancel()

    async def _work(self) -> None:
        while not self._should_stop():
            free = await self._free_slots()
            if free == 0:
                continue
            # A job running while we look may put itself back (a retry): only a queue found
            # empty with nothing running is really empty.
            was_running = bool(self._running)
            batch = await self._reserve(free)
            if batch is None:
                continue  # broker error: already backed off
            self._recovered_waiting = batch.recovered_waiting
            if batch.jobs:
                self._start(batch.jobs)
            elif self.options.stop_when_empty:
                if not self._running and not was_running:
                    return
                await self._wait_for_a_job()
            elif (woken := await self._idle(batch.next_due_s, free)) and woken.jobs:
                self._recovered_waiting = woken.recovered_waiting
                self._start(woken.jobs)
                # Let the jobs that woke us start before the next reserve is built and sent:
                # at low load that is their latency (about 0.1 ms here).
                await asyncio.sleep(0)

    def _should_stop(self) -> bool:
        opts = self.options
        if self._stop.is_set():
            return True
        if opts.max_jobs is not None and self._reserved_total >= opts.max_jobs:
            return True
        return (
            opts.max_time_s is not None and time.monotonic() - self._started_at >= opts.max_time_s
        )

    async def _free_slots(self) -> int:
        while self._busy() and not self._stop.is_set():
            self._slot_free.clear()
            await self._slot_free.wait()
        free = self.options.concurrency - len(self._running)
        if self.options.max_jobs is not None:
            free = min(free, self.options.max_jobs - self._reserved_total)
        return 0 if self._stop.is_set() else max(free, 0)

    def _busy(self) -> bool:
        """No slot to reserve into: all taken, or a recovered job runs or waits to (it runs alone,
        so the worker lets its other jobs finish first)."""
        if len(self._running) >= self.options.concurrency:
            return True
        return bool(self._running) and (self._alone is not None or self._recovered_waiting)

    async def _reserve(self, count: int) -> Batch | None:
        """Up to ``count`` jobs, taken from the queues in priority order; or, when this worker
        runs nothing, one job recovered from a dead worker, to run alone."""
        jobs: list[Reserved] = []
        next_due: float | None = None
        alone = not self._running
        waiting = False
        try:
            for queue in self.options.queues:
                batch = await self.driver.reserve(
                    queue, count - len(jobs), lease_s=self.options.lease_s,
                    default_tries=self.options.tries, alone=alone and not jobs,
                )  # fmt: skip
                jobs += batch.jobs
                waiting = waiting or batch.recovered_waiting
                if batch.next_due_s is not None:
                    next_due = min(batch.next_due_s, next_due if next_due is not None else 1e9)
                if len(jobs) >= count or (jobs and jobs[0].recovered):
                    break
        except DriverError as exc:
            await self._broker_error("reserve", exc, until_stop=True)
            return None if not jobs else Batch(jobs, next_due)
        self._broker_backoff.reset()
        self._backend_full.clear()
        return Batch(jobs, next_due, waiting)

    async def _broker_error(self, what: str, exc: DriverError, *, until_stop: bool = False) -> None:
        """Log and back off; ``until_stop`` cuts the wait short when the worker is stopping."""
        delay = self._broker_backoff.next_delay()
        if not isinstance(exc, BackendFull):
            log.warning("%s failed (%s); retrying in %.1fs", what, exc, delay)
        elif (left_out := self._backend_full.due()) is not None:
            log.error("%s failed: %s%s; retrying", what, exc, Recurring.note(left_out))
        if not until_stop:
            await asyncio.sleep(delay)
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop.wait(), delay)

    def _start(self, jobs: Sequence[Reserved]) -> None:
        if jobs[0].recovered:
            self._alone = jobs[0].job_id
            log.info("ALONE %s: its last worker died running it; it runs with no other job",
                     jobs[0].job_id)  # fmt: skip
        for item in jobs:
            self._reserved_total += 1
            self._heartbeat.track(item)
            task = asyncio.create_task(self._process(item), name=item.job_id)
            self._running[item.job_id] = task
            task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[None]) -> None:
        # Only if it is still this task: a retried job may already run again under the same id.
        if self._running.get(task.get_name()) is task:
            del self._running[task.get_name()]
            if self._alone == task.get_name():
                self._alone = None
        self._slot_free.set()

    async def _wait_for_a_job(self) -> None:
        if self._running:
            await asyncio.wait(list(self._running.values()), return_when=asyncio.FIRST_COMPLETED)

    async def _idle(self, next_due_s: float | None, free: int) -> Batch | None:
        """Block until a new job is pushed, a delayed one is due, or ``sleep_s`` passes.

        With one queue, the jobs that woke the worker come back with the wake-up itself.
        """
        if self._stop.is_set():
            return None  # asked to stop during the reserve: there is no wait to cut short
        opts = self.options
        timeout = opts.sleep_s if next_due_s is None else min(opts.sleep_s, next_due_s)
        if len(opts.queues) == 1:
            waiting: Awaitable[Batch | None] = self.driver.wait_and_reserve(
                opts.queues[0], timeout, free, lease_s=opts.lease_s, default_tries=opts.tries,
                alone=not self._running,
            )  # fmt: skip
        else:
            waiting = self.driver.wait(opts.queues, timeout)
        # If a shutdown cancels this mid-call, jobs it reserved run again after their lease.
        self._idle_task = asyncio.ensure_future(waiting)
        try:
            return await self._idle_task
        except asyncio.CancelledError:
            if not self._stop.is_set():
                raise
        except DriverError as exc:
            await self._broker_error("waiting for jobs", exc, until_stop=True)
        finally:
            self._idle_task = None
        return None

    async def _process(self, item: Reserved) -> None:
        try:
            attempt = await run_attempt(
                item.raw, item.attempts, self.options.defaults, self._executor,
                codec=self.codec, deadlines=self._deadlines, defer_unknown_jobs=True,
            )  # fmt: skip
        except asyncio.CancelledError:
            await self._interrupted(item)
            return
        except BaseException as exc:  # a path run_attempt does not cover: fail it, never a zombie
            log.exception("running %s raised outside its handler", item.job_id)
            attempt = unexpected_failure(item.raw, exc)
        log_attempt(attempt, item.attempts)
        try:
            await self._settle(item, attempt)
        except asyncio.CancelledError:
            raise
        except BaseException:
            # Let the lease go rather than renew it forever: the job runs again once it expires.
            self._heartbeat.untrack(item)
            log.exception("could not settle %s; it runs again when its lease expires", item.job_id)

    async def _settle(self, item: Reserved, attempt: Attempt) -> None:
        decision = attempt.decision
        if isinstance(decision, Ack):
            self._acks.put_nowait(item)  # the heartbeat keeps the lease until the ack lands
            return
        if isinstance(decision, Release | Defer):
            # A deferred job (its class is unknown here) gets its attempt back: no try is spent.
            refund = isinstance(decision, Defer)
            await self._with_retries("release", item, lambda: self.driver.release(
                item, delay_s=decision.delay_s, refund=refund))  # fmt: skip
        else:
            self.processed += 1
            await self._fail(item, attempt.error_text())
        self._heartbeat.untrack(item)

    async def _interrupted(self, item: Reserved) -> None:
        self._heartbeat.untrack(item)
        if item.job_id in self._lost:
            self._lost.discard(item.job_id)
            log.warning(
                "LOST  %s: lease lost (another worker has it); attempt abandoned", item.job_id
            )
            return
        # Shutdown: put it back at the front, and give the attempt back (a deploy costs no tries).
        await self._with_retries("release", item, lambda: self.driver.release(
            item, delay_s=0, refund=True))  # fmt: skip
        log.info("BACK  %s: put back on %s for the next worker", item.job_id, item.queue)

    async def _with_retries(
        self, what: str, item: Reserved, call: Callable[[], Awaitable[bool]]
    ) -> None:
        # A few tries only: if Redis stays away, the lease expires and the job comes back anyway.
        for _ in range(5):
            try:
                if not await call():
                    log.warning("%s of %s refused: lease lost", what, item.job_id)
                return
            except DriverError as exc:
                await self._broker_error(what, exc)

    async def _fail(self, item: Reserved, error: str) -> None:
        """Record, then delete (invariant 5): bury in the outbox, record, purge."""
        buried = False

        async def bury() -> bool:
            nonlocal buried
            buried = await self.driver.bury(item, error)
            return buried

        await self._with_retries("fail", item, bury)
        if buried:
            failure = FailedJob(item.job_id, self.connection, item.queue, item.raw, error)
            await self._outbox.record(failure)

    async def _ack_loop(self) -> None:
        """Acknowledge finished jobs in batches: one round trip for all that finished meanwhile."""
        while True:
            batch = [await self._acks.get()]
            while not self._acks.empty():
                batch.append(self._acks.get_nowait())
            jobs = [item for item in batch if item is not None]
            if jobs:
                await self._ack(jobs)
            for _ in batch:
                self._acks.task_done()
            if len(jobs) < len(batch):
                return  # the closing marker: everything queued before it is acked

    async def _ack(self, batch: list[Reserved]) -> None:
        while True:
            try:
                results = await self.driver.ack(batch)
                break
            except DriverError as exc:
                await self._broker_error("ack", exc)
        self.processed += len(batch)
        for item, ok in zip(batch, results, strict=True):
            self._heartbeat.untrack(item)
            if not ok:
                log.warning("LOST  %s: finished, but its lease had expired; it may run again",
                            item.job_id)  # fmt: skip

    async def _sweep_loop(self) -> None:
        while not self._closing.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._closing.wait(), self.options.sweep_interval_s)
            if not self._closing.is_set():
                await self.sweep()

    async def _stop_background(self, tasks: list[asyncio.Task[None]]) -> None:
        # Loops are asked to end rather than cancelled mid-call: redis-py can swallow a
        # cancellation that lands inside a command, which would leave the loop running.
        self._closing.set()
        self._acks.put_nowait(None)
        _, pending = await asyncio.wait(tasks, timeout=self.options.sweep_interval_s + 10)
        for task in pending:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def sweep(self) -> None:
        """Recover expired leases and due delayed jobs, and record jobs waiting in the outbox."""
        for queue in self.options.queues:
            try:
                await self.driver.recover(queue, default_tries=self.options.tries)
                await self._outbox.record_waiting(queue)
            except DriverError as exc:
                log.warning("sweep of %s failed: %s", queue, exc)

    def _lease_lost_from_thread(self, item: Reserved) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._lease_lost, item)

    def _lease_lost(self, item: Reserved) -> None:
        task = self._running.get(item.job_id)
        if task is not None:
            self._lost.add(item.job_id)
            task.cancel()

    async def _drain(self) -> None:
        """Let running jobs finish for ``shutdown_timeout_s``, then put the rest back."""
        if self._running:
            log.info("waiting up to %gs for %d running job(s)", self.options.shutdown_timeout_s,
                     len(self._running))  # fmt: skip
            everything = asyncio.ensure_future(asyncio.wait(list(self._running.values())))
            forced = asyncio.ensure_future(self._force.wait())
            await asyncio.wait(
                [everything, forced], timeout=self.options.shutdown_timeout_s,
                return_when=asyncio.FIRST_COMPLETED,
            )  # fmt: skip
            everything.cancel()
            forced.cancel()
            for task in list(self._running.values()):
                task.cancel()
            await asyncio.gather(*self._running.values(), return_exceptions=True)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._acks.join(), self.options.shutdown_timeout_s)

    def _install_signal_handlers(self) -> None:
        assert self._loop is not None
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                self._loop.add_signal_handler(sig, self.request_stop)

    def _remove_signal_handlers(self) -> None:
        assert self._loop is not None
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                self._loop.remove_signal_handler(sig)


async def run_worker(config: QueueConfig, options: WorkerOptions) -> int:
    """Open the backend ``config`` names and work it with ``options`` until stopped.

    Raises:
        ConfigError: no job class is registered (no job module was imported), or, with
            ``options.strict``, the backend cannot be reached or could lose jobs.
        MissingTable: a table it needs does not exist (run ``rune migrate``).
    """
    startup.require_job_classes()
    await startup.require_tables(config)
    store = FailedJobStore(config.database_url)
    try:
        driver = open_driver(config)
        try:
            await startup.check_backend(driver, strict=options.strict)
            worker = Worker(driver, store, options, connection=config.driver, codec=config.codec)
            return await worker.run()
        finally:
            await driver.close()
    finally:
        store.close()
