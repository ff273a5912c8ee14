"""The worker: reserve -> run -> ack | release | fail, up to N jobs at once.

The loop (`Worker._work`) fits on a screen; the per-job path is `Worker._process`; what to do after
an attempt is `retry.decide`. Broker errors never end the loop: it backs off and tries again, so a
Redis restart costs a pause, not a dead worker. Each reservation in flight is one `Running` record,
keyed by its lease (job id and token), which is what the heartbeat and the backend know it by.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import logging
import signal
import time
from collections.abc import Awaitable, Callable, Sequence

from runequeue import startup
from runequeue.backoff import Backoff
from runequeue.config import DEFAULT_LEASE_S, QueueConfig
from runequeue.deadlines import Deadlines
from runequeue.drivers import open_driver
from runequeue.drivers.base import Batch, Driver, Reserved, ReservesOnWake
from runequeue.errors import BackendFull, DriverError
from runequeue.failed_job import FailedJob
from runequeue.failed_store import FailedJobStore
from runequeue.heartbeat import Heartbeat
from runequeue.logs import Recurring
from runequeue.outbox import FailureOutbox
from runequeue.payload import Codec
from runequeue.retry import Ack, Defer, Release
from runequeue.runner import DEFAULT_CODEC, Attempt, log_attempt, run_attempt, unexpected_failure
from runequeue.threads import DaemonThreadPool
from runequeue.worker_options import WorkerOptions

__all__ = ["EXIT_THREADS_STUCK", "Running", "Worker", "WorkerOptions", "run_worker"]

log = logging.getLogger("runequeue.worker")

# The exit status of a worker that stopped because timed-out plain-def handlers hold as many
# threads as it runs jobs: only a new process gets those threads back (its supervisor starts one).
EXIT_THREADS_STUCK = 3
# Tries of a release or a bury before the worker lets the lease expire instead.
SETTLE_TRIES = 5
# How long a shutdown waits for a wake-up it cut short, to put back what that wake-up reserved.
ORPHAN_WAIT_S = 1.0

LeaseKey = tuple[str, str]  # (job id, lease token)


@dataclasses.dataclass(slots=True, eq=False)
class Running:
    """One reservation being worked on: the job as reserved, its task, and whether the heartbeat
    found its lease taken by another worker (then its attempt is abandoned, not put back)."""

    item: Reserved
    task: asyncio.Task[None]
    lost: bool = False


def _key(item: Reserved) -> LeaseKey:
    return item.job_id, item.token


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
        # A capability is looked for once, not at every wake-up (an isinstance of a protocol).
        self._reserves_on_wake = driver if isinstance(driver, ReservesOnWake) else None
        self.failed_store = failed_store
        self.options = options
        self.connection = connection
        self.codec = codec
        self.lease_s = options.lease_s if options.lease_s is not None else DEFAULT_LEASE_S
        self.processed = 0
        self.exit_code = 0
        self._started_at = time.monotonic()
        self._reserved_total = 0
        self._running: dict[LeaseKey, Running] = {}
        self._stop = asyncio.Event()
        self._force = asyncio.Event()
        self._slot_free = asyncio.Event()
        self._closing = asyncio.Event()
        self._outbox = FailureOutbox(driver, failed_store, connection=connection, codec=codec)
        self._orphans: list[asyncio.Future[Batch | None]] = []
        self._acks: asyncio.Queue[Reserved | None] = asyncio.Queue()
        # A job recovered from a dead worker runs alone (`Driver.reserve`): the one running now,
        # and whether others wait for this worker to have nothing else running.
        self._alone: LeaseKey | None = None
        self._recovered_waiting = False
        self._reserve_backoff = Backoff()
        self._ack_backoff = Backoff()
        self._settle_backoff = Backoff()
        self._backend_full = Recurring()  # "out of memory" comes back at every try: not every line
        # Daemon threads: a handler that outlived its timeout must not keep the process alive.
        self._threads = DaemonThreadPool(options.concurrency, name="runequeue-job")
        self._heartbeat = Heartbeat(
            driver.lease_keeper(),
            lease_s=self.lease_s,
            interval_s=self.lease_s / 3,
            on_lost=self._lease_lost_from_thread,
        )
        self._loop: asyncio.AbstractEventLoop | None = None
        self._deadlines = Deadlines()

    async def run(self) -> int:
        """Work until a signal, a limit or (``stop_when_empty``) an empty queue; returns the exit
        status: 0, or `EXIT_THREADS_STUCK`.

        Cancelling the task that runs this is a graceful stop, as SIGTERM is: running jobs finish
        (for up to ``shutdown_timeout_s``; a second cancel puts them back at once), connections
        close, and then `asyncio.CancelledError` is raised. The work runs in a task of its own,
        so a cancellation that lands inside a client library (which may swallow it) is never lost.
        """
        life = asyncio.create_task(self._live(), name="runequeue-worker")
        cancelled = False
        while True:
            try:
                status = await asyncio.shield(life)
                break
            except asyncio.CancelledError:
                if life.done():
                    raise
                cancelled = True
                self.request_stop()
        if cancelled:
            raise asyncio.CancelledError
        return status

    async def _live(self) -> int:
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
            await self._put_back_orphans()
            await self._stop_background(background)
            await self._outbox.flush(self.options.queues)
            # Off the loop: it joins a thread that may be mid-call to the backend.
            await asyncio.to_thread(self._heartbeat.stop)
            await self._deadlines.close()
            self._abandon_threads()
            self._remove_signal_handlers()
        log.info("worker stopped after %d job(s)", self.processed)
        return self.exit_code

    def request_stop(self) -> None:
        """Stop taking jobs; running ones finish (a second call puts them back at once)."""
        if self._stop.is_set():
            self._force.set()
        self._stop.set()
        self._slot_free.set()

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
                    queue, count - len(jobs), lease_s=self.lease_s,
                    default_tries=self.options.tries, alone=alone and not jobs,
                )  # fmt: skip
                jobs += batch.jobs
                waiting = waiting or batch.recovered_waiting
                if batch.next_due_s is not None:
                    next_due = min(batch.next_due_s, next_due if next_due is not None else 1e9)
                if len(jobs) >= count or (jobs and jobs[0].recovered):
                    break
        except DriverError as exc:
            await self._broker_error("reserve", exc, self._reserve_backoff, until_stop=True)
            return None if not jobs else Batch(jobs, next_due)
        self._reserve_backoff.reset()
        self._backend_full.clear()
        return Batch(jobs, next_due, waiting)

    async def _broker_error(
        self, what: str, exc: DriverError, backoff: Backoff, *, until_stop: bool = False
    ) -> None:
        """Log and back off; ``until_stop`` cuts the wait short when the worker is stopping."""
        delay = backoff.next_delay()
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
            self._alone = _key(jobs[0])
            log.info("ALONE %s: its last worker died running it; it runs with no other job",
                     jobs[0].job_id)  # fmt: skip
        for item in jobs:
            self._reserved_total += 1
            self._heartbeat.track(item)
            key = _key(item)
            task = asyncio.create_task(self._process(item), name=item.job_id)
            self._running[key] = Running(item, task)
            task.add_done_callback(functools.partial(self._finished, key))

    def _finished(self, key: LeaseKey, _: asyncio.Task[None]) -> None:
        del self._running[key]
        if self._alone == key:
            self._alone = None
        self._slot_free.set()

    async def _wait_for_a_job(self) -> None:
        if self._running:
            tasks = [running.task for running in self._running.values()]
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)

    async def _idle(self, next_due_s: float | None, free: int) -> Batch | None:
        """Block until a new job is pushed, a delayed one is due, ``sleep_s`` passes or the worker
        is asked to stop.

        With one queue, on a driver that `ReservesOnWake`, the jobs that woke the worker come
        back with the wake-up itself.
        """
        if self._stop.is_set():
            return None  # asked to stop during the reserve: there is no wait to cut short
        opts = self.options
        timeout = opts.sleep_s if next_due_s is None else min(opts.sleep_s, next_due_s)
        if len(opts.queues) == 1 and self._reserves_on_wake is not None:
            waiting: Awaitable[Batch | None] = self._reserves_on_wake.wait_and_reserve(
                opts.queues[0], timeout, free, lease_s=self.lease_s, default_tries=opts.tries,
                alone=not self._running,
            )  # fmt: skip
        else:
            waiting = self._wait(opts.queues, timeout)
        idle = asyncio.ensure_future(waiting)
        stopping = asyncio.ensure_future(self._stop.wait())
        try:
            await asyncio.wait([idle, stopping], return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopping.cancel()
        if not idle.done():
            # Asked to stop mid-wait: the wait is cut short, and whatever it may still reserve
            # (a client library can finish a call it was told to cancel) is put back on exit.
            idle.cancel()
            self._orphans.append(idle)
            return None
        try:
            return idle.result()
        except asyncio.CancelledError:
            return None
        except DriverError as exc:
            await self._broker_error("waiting for jobs", exc, self._reserve_backoff,
                                     until_stop=True)  # fmt: skip
        return None

    async def _wait(self, queues: Sequence[str], timeout_s: float) -> Batch | None:
        await self.driver.wait(queues, timeout_s)
        return None

    async def _put_back_orphans(self) -> None:
        """Release, with their attempts given back, jobs reserved by a wake-up cut short."""
        orphans, self._orphans = self._orphans, []
        if not orphans:
            return
        await asyncio.wait(orphans, timeout=ORPHAN_WAIT_S)
        for orphan in orphans:
            if not orphan.done() or orphan.cancelled() or orphan.exception() is not None:
                continue
            batch = orphan.result()
            for item in batch.jobs if batch is not None else []:
                await self._put_back(item)
                log.info("BACK  %s: reserved as the worker stopped; put back", item.job_id)

    async def _put_back(self, item: Reserved) -> None:
        """Release ``item`` at once with its attempt given back (a shutdown costs no tries)."""
        await self._with_retries("release", item, lambda: self.driver.release(
            item, delay_s=0, refund=True))  # fmt: skip

    async def _process(self, item: Reserved) -> None:
        try:
            attempt = await run_attempt(
                item.raw, item.attempts, self.options.defaults, self._threads,
                codec=self.codec, deadlines=self._deadlines, defer_unknown_jobs=True,
            )  # fmt: skip
        except asyncio.CancelledError:
            await self._interrupted(item)
            return
        except BaseException as exc:  # a path run_attempt does not cover: fail it, never a zombie
            log.exception("running %s raised outside its handler", item.job_id)
            attempt = unexpected_failure(item.raw, exc)
        self._stop_if_threads_are_stuck()
        log_attempt(attempt, item.attempts)
        try:
            await self._settle(item, attempt)
        except asyncio.CancelledError:
            raise
        except BaseException:
            # Let the lease go rather than renew it forever: the job runs again once it expires.
            self._heartbeat.untrack(item)
            log.exception("could not settle %s; it runs again when its lease expires", item.job_id)

    def _stop_if_threads_are_stuck(self) -> None:
        """Stop taking jobs once timed-out plain-def handlers hold as many threads as this worker
        runs jobs: every one of them is a thread (and its memory) that only a new process frees.
        Laravel's worker kills itself on a timeout for the same reason."""
        stuck = self._threads.abandoned
        if stuck < self.options.concurrency or self.exit_code == EXIT_THREADS_STUCK:
            return
        self.exit_code = EXIT_THREADS_STUCK
        log.error(
            "%d job thread(s) are still running handlers that timed out (a thread cannot be "
            "stopped): this worker takes no more jobs and exits with status %d, for its "
            "supervisor to start a fresh one. Give blocking calls in plain `def handle` jobs "
            "their own timeouts (HTTP, database, sockets)", stuck, EXIT_THREADS_STUCK,
        )  # fmt: skip
        self.request_stop()

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
        running = self._running.get(_key(item))
        if running is not None and running.lost:
            log.warning(
                "LOST  %s: lease lost (another worker has it); attempt abandoned", item.job_id
            )
            return
        # Shutdown: put it back at the front, and give the attempt back (a deploy costs no tries).
        await self._put_back(item)
        log.info("BACK  %s: put back on %s for the next worker", item.job_id, item.queue)

    async def _with_retries(
        self, what: str, item: Reserved, call: Callable[[], Awaitable[bool]]
    ) -> None:
        # A few tries only: if the backend stays away, the lease expires and the job comes back.
        for _ in range(SETTLE_TRIES):
            try:
                if not await call():
                    log.warning("%s of %s refused: lease lost", what, item.job_id)
                self._settle_backoff.reset()
                return
            except DriverError as exc:
                await self._broker_error(what, exc, self._settle_backoff)
        log.error("%s of %s gave up after %d tries; the job runs again when its lease expires",
                  what, item.job_id, SETTLE_TRIES)  # fmt: skip

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
                await self._broker_error("ack", exc, self._ack_backoff)
        self._ack_backoff.reset()
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
        running = self._running.get(_key(item))
        if running is not None:
            running.lost = True
            running.task.cancel()

    async def _drain(self) -> None:
        """Let running jobs finish for ``shutdown_timeout_s``, then put the rest back."""
        if self._running:
            log.info("waiting up to %gs for %d running job(s)", self.options.shutdown_timeout_s,
                     len(self._running))  # fmt: skip
            tasks = [running.task for running in self._running.values()]
            everything = asyncio.ensure_future(asyncio.wait(tasks))
            forced = asyncio.ensure_future(self._force.wait())
            await asyncio.wait(
                [everything, forced], timeout=self.options.shutdown_timeout_s,
                return_when=asyncio.FIRST_COMPLETED,
            )  # fmt: skip
            everything.cancel()
            forced.cancel()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._acks.join(), self.options.shutdown_timeout_s)

    def _abandon_threads(self) -> None:
        """Stop the job threads without waiting: one still running holds a handler that timed out
        (or was put back on shutdown), and a thread cannot be stopped; it ends with the process."""
        running = self._threads.running
        self._threads.shutdown(wait=False, cancel_futures=True)
        if running:
            log.warning("%d job thread(s) still running were abandoned (their attempts have "
                        "already timed out or been put back)", running)  # fmt: skip

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
    """Open the backend ``config`` names and work it with ``options`` until stopped; returns the
    worker's exit status. ``options.lease_s`` left unset takes ``config.retry_after_s``.

    Raises:
        ConfigError: no job class is registered (no job module was imported), or, with
            ``options.strict``, the backend cannot be reached or could lose jobs.
        MissingTable: a table it needs does not exist (run ``rune migrate``).
    """
    startup.require_job_classes()
    await startup.require_tables(config)
    if options.lease_s is None:
        options = dataclasses.replace(options, lease_s=config.retry_after_s)
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
