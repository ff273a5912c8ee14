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
import logging
import time
from collections.abc import Awaitable, Sequence
from typing import TYPE_CHECKING

from runequeue import events, signals, startup
from runequeue.backoff import Backoff, BrokerErrors
from runequeue.config import DEFAULT_LEASE_S, QueueConfig
from runequeue.deadlines import Deadlines
from runequeue.drivers import open_driver
from runequeue.drivers.base import Batch, Driver, Reserved, ReservesOnWake
from runequeue.errors import DriverError
from runequeue.failed_store import FailedJobStore
from runequeue.heartbeat import Heartbeat
from runequeue.in_flight import InFlight, Running
from runequeue.metrics_publisher import publisher_for

if TYPE_CHECKING:
    from runequeue.prometheus import MetricsServer
from runequeue.outbox import FailureOutbox
from runequeue.payload import Codec
from runequeue.runner import DEFAULT_CODEC, log_attempt, run_attempt, unexpected_failure
from runequeue.settle import Settler
from runequeue.threads import DaemonThreadPool
from runequeue.worker_control import ControlLoop, Presence
from runequeue.worker_options import WorkerOptions

__all__ = ["EXIT_THREADS_STUCK", "Running", "Worker", "WorkerOptions", "run_worker"]

log = logging.getLogger("runequeue.worker")

# The exit status of a worker that stopped because timed-out plain-def handlers hold as many
# threads as it runs jobs: only a new process gets those threads back (its supervisor starts one).
EXIT_THREADS_STUCK = 3
# How long a shutdown waits for a wake-up it cut short, to put back what that wake-up reserved.
ORPHAN_WAIT_S = 1.0


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
        self._limits = driver.limits()  # for job middleware
        # A capability is looked for once, not at every wake-up (an isinstance of a protocol).
        self._reserves_on_wake = driver if isinstance(driver, ReservesOnWake) else None
        self.failed_store = failed_store
        self.options = options
        self.connection = connection
        self.codec = codec
        self.lease_s = options.lease_s if options.lease_s is not None else DEFAULT_LEASE_S
        self.exit_code = 0
        self._started_at = time.monotonic()
        self._reserved_total = 0
        self._in_flight = InFlight(options.concurrency)
        self._stop = asyncio.Event()
        self._force = asyncio.Event()
        self._closing = asyncio.Event()
        self._orphans: list[asyncio.Future[Batch | None]] = []
        self._reserve_backoff = Backoff()
        self._errors = BrokerErrors(self._stop)
        # Daemon threads: a handler that outlived its timeout must not keep the process alive.
        self._threads = DaemonThreadPool(options.concurrency, name="runequeue-job")
        self._heartbeat = Heartbeat(
            driver.lease_keeper(),
            lease_s=self.lease_s,
            interval_s=self.lease_s / 3,
            on_lost=self._lease_lost_from_thread,
        )
        self._outbox = FailureOutbox(
            driver, failed_store, connection=connection, codec=codec,
            hook_timeout_s=options.timeout_s, threads=self._threads,
        )  # fmt: skip
        self._settler = Settler(driver, self._heartbeat, self._outbox, self._errors,
                                connection=connection)  # fmt: skip
        self._loop: asyncio.AbstractEventLoop | None = None
        self._deadlines = Deadlines()
        # This worker's record in its backend, and the restart and pause signals it obeys.
        presence = Presence(
            driver.control(), connection=connection, queues=options.queues,
            concurrency=options.concurrency, sweep_interval_s=options.sweep_interval_s,
        )  # fmt: skip
        self._control = ControlLoop(
            presence, stats=lambda: (len(self._in_flight), self.processed),
            on_restart=self._stop_gently, interval_s=options.sweep_interval_s,
        )  # fmt: skip
        # Per-minute metrics and the last jobs run, in the backend for the dashboard (its
        # Prometheus endpoint, if any, reads queue sizes back through the same publisher).
        self.publisher = publisher_for(driver, presence.id, options)  # None: no cost

    @property
    def processed(self) -> int:
        """Jobs that ended here: acknowledged, or failed for good."""
        return self._settler.processed

    async def run(self) -> int:
        """Work until stopped, a limit or (``stop_when_empty``) an empty queue; returns the exit
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
        if self.options.handle_signals:
            signals.take_over(self._loop, self.request_stop)
        self._heartbeat.start()
        background = [
            asyncio.create_task(self._settler.run_acks()),
            asyncio.create_task(self._sweep_loop()),
            asyncio.create_task(self._control.run(self._closing)),
        ]
        if self.publisher is not None:
            background.append(asyncio.create_task(self.publisher.run(self._closing)))
        log.info("worker started: queues %s, concurrency %d", ",".join(self.options.queues),
                 self.options.concurrency)  # fmt: skip
        try:
            await self._control.check_in()
            await self._work()
        finally:
            if events.listening(events.WorkerStopping):
                await events.emit_async(events.WorkerStopping(self.exit_code))
            await self._drain()
            await self._put_back_orphans()
            await self._stop_background(background)
            await self._outbox.flush(self.options.queues)
            if self.publisher is not None:
                await self.publisher.flush()
            await self._control.check_out()
            # Off the loop: it joins a thread that may be mid-call to the backend.
            await asyncio.to_thread(self._heartbeat.stop)
            await self._deadlines.close()
            self._abandon_threads()
            if self.options.handle_signals:
                signals.give_back(self._loop)
        log.info("worker stopped after %d job(s)", self.processed)
        return self.exit_code

    def _stop_gently(self) -> None:
        """Stop taking jobs and let running ones finish, even if asked twice (a restart signal
        on top of a SIGTERM must not put running jobs back, as a second SIGTERM does)."""
        if not self._stop.is_set():
            self.request_stop()

    def request_stop(self) -> None:
        """Stop taking jobs; running ones finish (a second call puts them back at once)."""
        if self._stop.is_set():
            self._force.set()
        self._stop.set()
        self._in_flight.slot_free.set()

    async def _work(self) -> None:
        while not self._should_stop():
            free = await self._free_slots()
            if free == 0:
                continue
            # A job running while we look may put itself back (a retry): only a queue found
            # empty with nothing running is really empty.
            was_running = bool(self._in_flight)
            batch = await self._reserve(free)
            if batch is None:
                continue  # broker error: already backed off
            self._in_flight.recovered_waiting = batch.recovered_waiting
            if batch.jobs:
                self._start(batch.jobs)
            elif self.options.stop_when_empty:
                if not self._in_flight and not was_running:
                    return
                await self._wait_for_a_job()
            elif (woken := await self._idle(batch.next_due_s, free)) and woken.jobs:
                self._in_flight.recovered_waiting = woken.recovered_waiting
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
        while self._in_flight.busy() and not self._stop.is_set():
            self._in_flight.slot_free.clear()
            await self._in_flight.slot_free.wait()
        free = self.options.concurrency - len(self._in_flight)
        if self.options.max_jobs is not None:
            free = min(free, self.options.max_jobs - self._reserved_total)
        return 0 if self._stop.is_set() else max(free, 0)

    async def _reserve(self, count: int) -> Batch | None:
        """Up to ``count`` jobs, taken from the queues in priority order; or, when this worker
        runs nothing, one job recovered from a dead worker, to run alone."""
        jobs: list[Reserved] = []
        next_due: float | None = None
        alone = not self._in_flight
        waiting = False
        try:
            for queue in self._active_queues():
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
            await self._errors.back_off("reserve", exc, self._reserve_backoff, until_stop=True)
            return None if not jobs else Batch(jobs, next_due)
        self._reserve_backoff.reset()
        self._errors.recovered()
        return Batch(jobs, next_due, waiting)

    def _start(self, jobs: Sequence[Reserved]) -> None:
        if jobs[0].recovered:
            log.info("ALONE %s: its last worker died running it; it runs with no other job",
                     jobs[0].job_id)  # fmt: skip
        for item in jobs:
            self._reserved_total += 1
            self._heartbeat.track(item)
            self._in_flight.add(item, asyncio.create_task(self._process(item), name=item.job_id))

    async def _wait_for_a_job(self) -> None:
        if self._in_flight:
            await asyncio.wait(self._in_flight.tasks(), return_when=asyncio.FIRST_COMPLETED)

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
        queues = self._active_queues()
        if len(queues) == 1 and self._reserves_on_wake is not None:
            waiting: Awaitable[Batch | None] = self._reserves_on_wake.wait_and_reserve(
                queues[0], timeout, free, lease_s=self.lease_s, default_tries=opts.tries,
                alone=not self._in_flight,
            )  # fmt: skip
        elif queues:
            waiting = self._wait(queues, timeout)
        else:  # every queue is paused: look again after the sleep (a sweep may resume one)
            waiting = self._paused(timeout)
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
            await self._errors.back_off("waiting for jobs", exc, self._reserve_backoff,
                                        until_stop=True)  # fmt: skip
        return None

    async def _wait(self, queues: Sequence[str], timeout_s: float) -> Batch | None:
        await self.driver.wait(queues, timeout_s)
        return None

    async def _paused(self, timeout_s: float) -> Batch | None:
        await asyncio.sleep(timeout_s)
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
                await self._settler.put_back(item)
                log.info("BACK  %s: reserved as the worker stopped; put back", item.job_id)

    async def _process(self, item: Reserved) -> None:
        try:
            attempt = await run_attempt(
                item.raw, item.attempts, self.options.defaults, self._threads,
                codec=self.codec, deadlines=self._deadlines, defer_unknown_jobs=True,
                unlock=self.driver.unlock, batches=self.driver.batches, limits=self._limits,
            )  # fmt: skip
        except asyncio.CancelledError:
            await self._interrupted(item)
            return
        except BaseException as exc:  # a path run_attempt does not cover: fail it, never a zombie
            log.exception("running %s raised outside its handler", item.job_id)
            attempt = unexpected_failure(item.raw, exc)
        self._stop_if_threads_are_stuck()
        log_attempt(attempt, item.attempts)
        if self.publisher is not None:
            self.publisher.saw(item, attempt, running=len(self._in_flight))
        try:
            await self._settler.settle(item, attempt)
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
        if not self._stop.is_set():  # a stop already under way stays graceful, not forced
            self.request_stop()

    async def _interrupted(self, item: Reserved) -> None:
        self._heartbeat.untrack(item)
        running = self._in_flight.get(item)
        if running is not None and running.lost:
            log.warning(
                "LOST  %s: lease lost (another worker has it); attempt abandoned", item.job_id
            )
            return
        # Shutdown: put it back at the front, and give the attempt back (a deploy costs no tries).
        await self._settler.put_back(item)
        log.info("BACK  %s: put back on %s for the next worker", item.job_id, item.queue)

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
        self._settler.close_acks()
        _, pending = await asyncio.wait(tasks, timeout=self.options.sweep_interval_s + 10)
        for task in pending:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _active_queues(self) -> Sequence[str]:
        """The worker's queues, less those paused (`rune queue:pause`), in priority order."""
        paused = self._control.paused
        queues = self.options.queues
        return [queue for queue in queues if queue not in paused] if paused else queues

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
        running = self._in_flight.get(item)
        if running is not None:
            running.lost = True
            running.task.cancel()

    async def _drain(self) -> None:
        """Let running jobs finish for ``shutdown_timeout_s``, then put the rest back."""
        if self._in_flight:
            log.info("waiting up to %gs for %d running job(s)", self.options.shutdown_timeout_s,
                     len(self._in_flight))  # fmt: skip
            tasks = self._in_flight.tasks()
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
            await asyncio.wait_for(self._settler.acks_landed(), self.options.shutdown_timeout_s)

    def _abandon_threads(self) -> None:
        """Stop the job threads without waiting: one still running holds a handler that timed out
        (or was put back on shutdown), and a thread cannot be stopped; it ends with the process."""
        running = self._threads.running
        self._threads.shutdown(wait=False, cancel_futures=True)
        if running:
            log.warning("%d job thread(s) still running were abandoned (their attempts have "
                        "already timed out or been put back)", running)  # fmt: skip


async def run_worker(config: QueueConfig, options: WorkerOptions) -> int:
    """Open the backend ``config`` names and work it with ``options`` until stopped; returns the
    worker's exit status. ``options.lease_s`` left unset takes ``config.retry_after_s``.

    Raises:
        ConfigError: no job class is registered (no job module was imported), or, with
            ``options.strict``, the backend cannot be reached or could lose jobs.
        MissingTable: a table it needs does not exist (run ``rune migrate``).
    """
    startup.require_job_classes()
    startup.require_queue_names(config, options.queues)
    await startup.require_tables(config)
    if options.lease_s is None:
        options = dataclasses.replace(options, lease_s=config.retry_after_s)
    store = FailedJobStore(config.database_url)
    try:
        driver = open_driver(config)
        try:
            await startup.check_backend(driver, strict=options.strict)
            worker = Worker(driver, store, options, connection=config.driver, codec=config.codec)
            server = _serve_metrics(worker, options)
            try:
                return await worker.run()
            finally:
                if server is not None:
                    server.stop()
        finally:
            await driver.close()
    finally:
        store.close()


def _serve_metrics(worker: Worker, options: WorkerOptions) -> MetricsServer | None:
    """Serve the worker's Prometheus metrics, when ``options.metrics_port`` asks for them."""
    if options.metrics_port is None or worker.publisher is None:
        return None
    from runequeue.prometheus import serve_worker_metrics

    return serve_worker_metrics(worker.publisher.metrics, host=options.metrics_host,
                                port=options.metrics_port, token=options.metrics_token,
                                read_back=worker.publisher)  # fmt: skip
