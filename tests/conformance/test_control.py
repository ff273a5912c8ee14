"""Control values and the workers steered by them, on every driver: a worker's record while it
runs, paused queues, and a restart signal that stops every worker once its jobs end."""

from __future__ import annotations

import asyncio
from pathlib import Path

from runequeue import Queue, QueueConfig
from runequeue.drivers import open_driver
from runequeue.drivers.base import Driver
from runequeue.failed_store import FailedJobStore
from runequeue.worker import Worker
from runequeue.worker_control import live_workers, pause, resume, signal_restart
from tests.conformance.test_contract import with_driver
from tests.support.jobs import Record, read_ledger
from tests.workers import options


def test_values_expire_and_namespaces_are_apart(backend: QueueConfig) -> None:
    async def check(driver: Driver) -> None:
        control = driver.control()
        await control.put("signal", "restart", "1")
        await control.put("signal", "restart", "2")  # replaced
        await control.put("worker", "w1", "{}", ttl_s=0.3)
        assert await control.get_all("signal") == {"restart": "2"}
        assert await control.get_all("worker") == {"w1": "{}"}
        await asyncio.sleep(0.5)
        assert await control.get_all("worker") == {}  # expired
        await control.delete("signal", "restart")
        await control.delete("signal", "restart")  # deleting what is gone is fine
        assert await control.get_all("signal") == {}

    with_driver(backend, check)


def test_a_worker_shows_itself_obeys_pause_and_resume_and_stops_on_restart(
    backend: QueueConfig, tmp_path: Path
) -> None:
    ledger = tmp_path / "ledger"

    async def scenario() -> int:
        driver = open_driver(backend)
        store = FailedJobStore(backend.database_url)
        control = driver.control()
        await pause(control, "default")
        worker = Worker(driver, store, options(backend, stop_when_empty=False, sweep_interval_s=0.1,
                                               sleep_s=0.1), connection=backend.driver)  # fmt: skip
        running = asyncio.create_task(worker.run())
        try:
            await Queue.dispatch_async(backend, Record(str(ledger)))
            await asyncio.sleep(0.6)
            (record,) = await live_workers(control)
            assert record.queues == ["default"] and record.processed == 0
            assert read_ledger(ledger) == []  # paused: not taken

            await resume(control, "default")
            for _ in range(100):
                if read_ledger(ledger):
                    break
                await asyncio.sleep(0.05)
            assert len(read_ledger(ledger)) == 1

            await signal_restart(control)
            status = await asyncio.wait_for(running, 10)
            assert await live_workers(control) == []  # it removed its record on the way out
            return status
        finally:
            running.cancel()
            await Queue.aclose_connections()
            await driver.close()
            store.close()

    assert asyncio.run(scenario()) == 0
