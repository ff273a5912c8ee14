"""A bury lands however long the backend is away; a hung failed() hook is abandoned after the job's
timeout; signals belong to the worker only when it owns the process (`handle_signals`)."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from runequeue import Queue, QueueConfig, signals
from runequeue.backoff import Backoff
from runequeue.drivers import open_driver
from runequeue.drivers.memory import default_store
from runequeue.errors import DriverError
from runequeue.failed_store import FailedJobStore
from runequeue.worker import Worker
from tests.support.jobs import AlwaysFails, FailsWithBlockingHook, Record, read_ledger
from tests.workers import failed_jobs, options, work


@pytest.fixture
def memory(sqlite_url: str) -> QueueConfig:
    default_store().reset()
    return QueueConfig(driver="memory", database_url=sqlite_url)


@pytest.fixture
def quick_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    """Back-off waits of 10 ms, so that many failed tries take no time."""
    monkeypatch.setattr(Backoff, "next_delay", lambda self: 0.01)


@pytest.fixture
def own_signals() -> Iterator[None]:
    """Put back this process's SIGTERM/SIGINT handlers after a test that changes them."""
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    yield
    for sig, handler in saved.items():
        signal.signal(sig, handler)


def test_a_bury_is_retried_until_it_lands(
    memory: QueueConfig, tmp_path: Path, quick_backoff: None
) -> None:
    # More failures than a release is tried (5): a bury that gave up would leave the job to fail
    # again when its lease expired, as LeaseExpired, with its hook run a second time.
    default_store().fail("bury", times=8, error=DriverError("backend away"))
    ledger = tmp_path / "ledger"
    Queue.dispatch(memory, AlwaysFails(ledger=str(ledger)), tries=1)

    work(memory)

    [failure] = failed_jobs(memory)
    assert "Boom" in failure.exception.splitlines()[0]
    assert [row[0] for row in read_ledger(ledger)] == ["start", "hook:Boom"]
    assert Queue.size(memory) == 0


def test_a_failed_hook_that_hangs_is_abandoned_after_the_job_s_timeout(
    memory: QueueConfig, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    ledger = tmp_path / "ledger"
    Queue.dispatch(memory, FailsWithBlockingHook(ledger=str(ledger), seconds=5), timeout=0.3)

    with caplog.at_level(logging.ERROR, logger="runequeue"):
        work(memory)

    # The worker went on (and stopped) without waiting the hook's 5 s out.
    assert [row[0] for row in read_ledger(ledger)] == ["hook-start"]
    assert "still running after 0.3s: abandoned" in caplog.text
    assert len(failed_jobs(memory)) == 1


async def _run_until_working(
    worker: Worker, config: QueueConfig, ledger: Path
) -> asyncio.Task[int]:
    """Start ``worker`` and return once it has run a job: its set-up is over."""
    Queue.dispatch(config, Record(ledger=str(ledger)))
    task = asyncio.create_task(worker.run())
    async with asyncio.timeout(10):
        while not read_ledger(ledger):
            await asyncio.sleep(0.01)
    return task


def _worker(config: QueueConfig, **overrides: object) -> Worker:
    settings = options(config, stop_when_empty=False, sleep_s=0.05, **overrides)
    return Worker(open_driver(config), FailedJobStore(config.database_url), settings,
                  connection=config.driver)  # fmt: skip


def test_an_embedded_worker_leaves_sigterm_to_its_application(
    memory: QueueConfig, tmp_path: Path, own_signals: None
) -> None:
    async def scenario() -> list[str]:
        heard: list[str] = []
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, heard.append, "application")
        worker = _worker(memory)
        task = await _run_until_working(worker, memory, tmp_path / "ledger")
        os.kill(os.getpid(), signal.SIGTERM)
        await asyncio.sleep(0.2)
        assert not task.done(), "the application's SIGTERM stopped the embedded worker"
        task.cancel()
        await asyncio.wait([task], timeout=10)
        os.kill(os.getpid(), signal.SIGTERM)  # still the application's once the worker is gone
        await asyncio.sleep(0.1)
        loop.remove_signal_handler(signal.SIGTERM)
        worker.failed_store.close()
        return heard

    assert asyncio.run(scenario()) == ["application", "application"]


def test_a_worker_that_handles_signals_stops_gracefully_on_sigterm(
    memory: QueueConfig, tmp_path: Path, own_signals: None
) -> None:
    async def scenario() -> int:
        worker = _worker(memory, handle_signals=True)
        task = await _run_until_working(worker, memory, tmp_path / "ledger")
        os.kill(os.getpid(), signal.SIGTERM)
        done, _ = await asyncio.wait([task], timeout=10)
        worker.failed_store.close()
        assert done, "SIGTERM did not stop the worker"
        return task.result()

    assert asyncio.run(scenario()) == 0


def test_a_sigterm_before_the_worker_runs_is_a_graceful_stop(
    memory: QueueConfig, tmp_path: Path, own_signals: None
) -> None:
    # `rune queue:work` catches signals from its first line: a supervisor that stops a worker
    # still importing job modules gets a clean exit, and no job is taken.
    Queue.dispatch(memory, Record(ledger=str(tmp_path / "ledger")))
    signals.catch_early()
    os.kill(os.getpid(), signal.SIGTERM)

    worker = work(memory, stop_when_empty=False, handle_signals=True)

    assert worker.exit_code == 0
    assert worker.processed == 0
    assert Queue.size(memory) == 1


def test_catching_early_starts_afresh_each_time(own_signals: None) -> None:
    signals.catch_early()
    os.kill(os.getpid(), signal.SIGTERM)
    signals.catch_early()
    assert not signals.arrived_early()
