"""A worker embedded in someone's event loop (a FastAPI lifespan, a test) stops when its task is
cancelled: the cancellation becomes a graceful stop, on every driver, wherever it lands."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from runequeue import Queue, QueueConfig
from runequeue.drivers import open_driver
from runequeue.failed_store import FailedJobStore
from runequeue.worker import Worker
from tests.support.jobs import Sleepy, read_ledger
from tests.workers import options

STOPPED_WITHIN_S = 5.0


async def _cancel_after(config: QueueConfig, delay_s: float) -> tuple[float, bool]:
    """Start an idle worker, cancel its task after ``delay_s``; seconds until it was done, and
    whether awaiting it raised CancelledError (a cancelled task reports itself cancelled)."""
    driver = open_driver(config)
    store = FailedJobStore(config.database_url)
    worker = Worker(driver, store, options(config, stop_when_empty=False, sleep_s=3.0),
                    connection=config.driver, codec=config.codec)  # fmt: skip
    task = asyncio.create_task(worker.run())
    try:
        await asyncio.sleep(delay_s)
        cancelled_at = time.monotonic()
        task.cancel()
        done, _ = await asyncio.wait([task], timeout=STOPPED_WITHIN_S * 2)
        took = time.monotonic() - cancelled_at
        return took, bool(done) and task.cancelled()
    finally:
        if not task.done():
            worker.request_stop()
            worker.request_stop()
            await asyncio.wait([task], timeout=30)
        await driver.close()
        store.close()


def test_cancelling_an_idle_worker_stops_it(backend: QueueConfig) -> None:
    # Cancels landing at different points of the idle wait (redis-py swallowed most of them).
    for delay_s in (0.05, 0.2, 0.35, 0.6, 0.9):
        took, cancelled = asyncio.run(_cancel_after(backend, delay_s))
        assert took < STOPPED_WITHIN_S, f"cancelled after {delay_s}s, still running {took:.1f}s on"
        assert cancelled


def test_cancelling_a_busy_worker_lets_its_job_finish(backend: QueueConfig, tmp_path: Path) -> None:
    ledger = tmp_path / "ledger"
    Queue.dispatch(backend, Sleepy(ledger=str(ledger), seconds=0.5))

    async def scenario() -> None:
        driver = open_driver(backend)
        store = FailedJobStore(backend.database_url)
        worker = Worker(driver, store, options(backend, stop_when_empty=False),
                        connection=backend.driver, codec=backend.codec)  # fmt: skip
        task = asyncio.create_task(worker.run())
        try:
            while not read_ledger(ledger):
                await asyncio.sleep(0.01)
            task.cancel()
            done, _ = await asyncio.wait([task], timeout=STOPPED_WITHIN_S)
            assert done and task.cancelled()
        finally:
            await driver.close()
            store.close()

    asyncio.run(scenario())
    assert [row[0] for row in read_ledger(ledger)] == ["start", "done"]  # drained, not cut short
    assert Queue.size(backend) == 0  # and acknowledged
