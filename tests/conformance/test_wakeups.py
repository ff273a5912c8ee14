"""Every path that makes a job runnable wakes an idle worker promptly, on every driver.

The workers here idle with ``sleep_s=10``: a job made runnable while they wait must run long
before that. The bounds (a few seconds) are functional wake-up checks, not speed benchmarks: a
worker that was not woken would wait the full ten seconds.

Across processes, SQLite and MySQL (and PostgreSQL through psycopg2) are polled: a push from
elsewhere is seen within the worker's poll interval, at most ``--sleep`` (the rule README states);
those tests check that rule.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from runequeue import Queue, QueueConfig, Worker
from runequeue.drivers import open_driver
from runequeue.drivers.database import notified
from runequeue.failed_store import FailedJobStore
from tests.support.jobs import Event, FlakyThenOk, Record, SlowFirstAttemptFails, read_events
from tests.workers import options, wait_until

IDLE_SLEEP_S = 10.0
PROMPTLY_S = 3.0  # far below IDLE_SLEEP_S: only a wake-up explains it


def polled(config: QueueConfig) -> bool:
    """Other processes' pushes are polled for, where the driver has no NOTIFY to wait for."""
    return config.driver == "database" and not notified(config.database_url)


@contextlib.contextmanager
def idle_worker(config: QueueConfig, **overrides: Any) -> Iterator[None]:
    """A worker in a thread of its own that idles for up to ``IDLE_SLEEP_S``; stopped on exit."""
    started = threading.Event()
    running: dict[str, Any] = {}

    async def main() -> None:
        driver = open_driver(config)
        store = FailedJobStore(config.database_url)
        settings = {"sleep_s": IDLE_SLEEP_S, "stop_when_empty": False, **overrides}
        worker = Worker(
            driver, store, options(config, **settings), connection=config.driver,
            codec=config.codec,
        )  # fmt: skip
        running.update(worker=worker, loop=asyncio.get_running_loop())
        started.set()
        try:
            await worker.run()
        finally:
            await driver.close()
            store.close()

    thread = threading.Thread(target=asyncio.run, args=(main(),), daemon=True)
    thread.start()
    assert started.wait(10), "the worker did not start"
    try:
        yield
    finally:
        # Seen at once, even during a reserve or an idle wait: the worker then finishes its
        # in-flight jobs (none here) and closes its connections.
        running["loop"].call_soon_threadsafe(running["worker"].request_stop)
        thread.join(10)
        assert not thread.is_alive(), "the worker did not stop"


def events_of(ledger: Path, event: str) -> list[Event]:
    return [e for e in read_events(ledger) if e.event == event]


def done(ledger: Path) -> bool:
    return bool(events_of(ledger, "done"))


def test_a_retry_with_no_backoff_wakes_the_idle_worker(
    backend: QueueConfig, tmp_path: Path
) -> None:
    ledger = tmp_path / "ledger"
    Queue.dispatch(backend, FlakyThenOk(ledger=str(ledger), fail_times=1))

    with idle_worker(backend):
        wait_until(lambda: done(ledger), IDLE_SLEEP_S * 2, "the retried attempt")

    first, second = events_of(ledger, "start")
    assert (first.attempt, second.attempt) == (1, 2)
    assert second.at - first.at < PROMPTLY_S


def test_a_retry_after_a_long_attempt_is_not_left_to_the_poll_interval(
    backend: QueueConfig, tmp_path: Path
) -> None:
    # The attempt runs while the worker idles, so a polling worker's interval has grown to
    # about 3 s by the time the job is released: its own release must make it look again.
    ledger = tmp_path / "ledger"
    Queue.dispatch(backend, SlowFirstAttemptFails(ledger=str(ledger), seconds=4.5))

    with idle_worker(backend):
        wait_until(lambda: done(ledger), IDLE_SLEEP_S * 2, "the retried attempt")

    (failing,) = events_of(ledger, "failing")
    retried = events_of(ledger, "start")[1]
    assert retried.attempt == 2
    assert retried.at - failing.at < 1.5


def test_a_retry_with_backoff_runs_when_due_not_after_the_idle_sleep(
    backend: QueueConfig, tmp_path: Path
) -> None:
    ledger = tmp_path / "ledger"
    Queue.dispatch(backend, FlakyThenOk(ledger=str(ledger), fail_times=1), backoff=1)

    with idle_worker(backend):
        wait_until(lambda: done(ledger), IDLE_SLEEP_S * 2, "the retried attempt")

    first, second = events_of(ledger, "start")
    assert 0.9 < second.at - first.at < 1 + PROMPTLY_S


def test_a_job_whose_worker_died_runs_soon_after_its_lease_expires(
    backend: QueueConfig, tmp_path: Path
) -> None:
    ledger = tmp_path / "ledger"
    job_id = Queue.dispatch(backend, Record(ledger=str(ledger)))
    lease_s = 1.0

    async def take_and_vanish() -> float:
        """Reserve the job as a worker that then dies (never acks); returns when it expires."""
        driver = open_driver(backend)
        try:
            (taken,) = (await driver.reserve("default", 1, lease_s=lease_s, default_tries=3)).jobs
        finally:
            await driver.close()
        assert taken.job_id == job_id
        return time.time() + lease_s

    expires_at = asyncio.run(take_and_vanish())
    # The idle worker's sweep recovers the lease; nothing else would wake it for ten seconds.
    with idle_worker(backend, sweep_interval_s=0.5):
        wait_until(lambda: done(ledger), IDLE_SLEEP_S * 2, "the redelivery")

    (redelivered,) = events_of(ledger, "done")
    assert redelivered.attempt == 2
    assert redelivered.at - expires_at < PROMPTLY_S


def test_a_job_pushed_back_by_another_process_wakes_the_idle_worker(
    backend: QueueConfig, tmp_path: Path
) -> None:
    # What `rune queue:retry` does: a push from another connection to a worker long idle.
    # Polled: the worst case is --sleep; 1 s of it leaves ample margin under PROMPTLY_S.
    sleep_s = 1.0 if polled(backend) else IDLE_SLEEP_S
    ledger = tmp_path / "ledger"
    with idle_worker(backend, sleep_s=sleep_s):
        time.sleep(3)  # long enough for a polling worker's interval to reach its longest
        pushed_at = time.time()
        Queue.dispatch(backend, Record(ledger=str(ledger)))
        wait_until(lambda: done(ledger), IDLE_SLEEP_S * 2, "the pushed job")

    (ran,) = events_of(ledger, "done")
    assert ran.at - pushed_at < PROMPTLY_S


def test_a_delayed_job_runs_when_due_on_a_worker_of_several_queues(
    backend: QueueConfig, tmp_path: Path
) -> None:
    ledger = tmp_path / "ledger"
    due_at = time.time() + 1.5
    Queue.dispatch(backend, Record(ledger=str(ledger)), delay=1.5)

    with idle_worker(backend, queues=("high", "default")):
        wait_until(lambda: done(ledger), IDLE_SLEEP_S * 2, "the delayed job")

    (ran,) = events_of(ledger, "done")
    assert -0.1 < ran.at - due_at < PROMPTLY_S


def test_a_delayed_job_dispatched_to_an_idle_worker_runs_when_due(
    backend: QueueConfig, tmp_path: Path
) -> None:
    # The worker went idle with nothing delayed, so its wait is the full IDLE_SLEEP_S; a delayed
    # push must tell it when to look again. (No sweep either: only that wake-up explains it.)
    ledger = tmp_path / "ledger"
    with idle_worker(backend, sweep_interval_s=60.0):
        time.sleep(0.3)  # into its idle wait
        dispatched = time.time()
        Queue.dispatch(backend, Record(ledger=str(ledger)), delay=0.5)
        wait_until(lambda: done(ledger), IDLE_SLEEP_S * 2, "the delayed job")

    (ran,) = events_of(ledger, "done")
    assert ran.at - dispatched < 0.5 + PROMPTLY_S


def test_a_worker_of_several_queues_is_woken_by_a_push_to_each_of_them(
    backend: QueueConfig, tmp_path: Path
) -> None:
    # On a Redis Cluster these queues hash to slots on different masters, and no command may
    # name two slots: the worker waits on each queue's node at once.
    queues = ("q0", "q4", "high")
    sleep_s = 1.0 if polled(backend) else IDLE_SLEEP_S
    with idle_worker(backend, queues=queues, sleep_s=sleep_s):
        for queue in reversed(queues):
            ledger = tmp_path / f"ledger-{queue}"
            time.sleep(0.3)  # into its idle wait
            pushed_at = time.time()
            Queue.dispatch(backend, Record(ledger=str(ledger)), queue=queue)
            wait_until(functools.partial(done, ledger), IDLE_SLEEP_S * 2, f"the job on {queue}")
            (ran,) = events_of(ledger, "done")
            assert ran.at - pushed_at < PROMPTLY_S, queue
