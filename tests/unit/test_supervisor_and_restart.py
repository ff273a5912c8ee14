"""The supervisor stopped before its workers start, and a restart signal that lands while a
worker drains: neither may start a worker, nor put a running job back."""

from __future__ import annotations

import asyncio
import logging
import sys
from pathlib import Path

import pytest

from runequeue import Queue, QueueConfig
from runequeue.drivers.memory import MemoryDriver, default_store
from runequeue.failed_store import FailedJobStore
from runequeue.supervisor import Supervisor
from runequeue.worker import Worker
from runequeue.worker_control import signal_restart
from tests.support.jobs import ChainLink, read_ledger
from tests.workers import options


def test_a_supervisor_stopped_before_it_starts_starts_nothing(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, "runequeue.worker")
    supervisor = Supervisor([sys.executable, "-c", "import time; time.sleep(60)"], 2,
                            restart_clean_exits=True)  # fmt: skip
    supervisor.stop()
    assert supervisor.run() == 0
    assert "started" not in caplog.text  # (it once started both, unsignalled, and waited)


def test_a_restart_signal_during_a_drain_lets_the_running_job_finish(
    sqlite_url: str, tmp_path: Path
) -> None:
    default_store().reset()
    config = QueueConfig(driver="memory", database_url=sqlite_url)
    ledger = tmp_path / "ledger"

    async def scenario() -> None:
        driver = MemoryDriver()
        store = FailedJobStore(sqlite_url)
        worker = Worker(driver, store, options(config, stop_when_empty=False, sweep_interval_s=0.1),
                        connection="memory")  # fmt: skip
        running = asyncio.create_task(worker.run())
        await Queue.dispatch_async(config, ChainLink(str(ledger), "slow", seconds=0.6))
        while not read_ledger(ledger):
            await asyncio.sleep(0.02)
        worker.request_stop()  # SIGTERM: drain
        await signal_restart(driver.control())  # and a deploy's restart on top of it
        await asyncio.wait_for(running, 10)
        store.close()

    asyncio.run(scenario())
    assert [row[0] for row in read_ledger(ledger)] == ["start:slow", "done:slow"]
