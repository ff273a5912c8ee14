"""`rune queue:work --processes N`: N workers started and kept running by one command."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import signal
from pathlib import Path

from runequeue import Queue, QueueConfig
from runequeue.drivers import open_driver
from runequeue.worker_control import WorkerRecord, live_workers
from tests.support.jobs import Record, read_ledger
from tests.workers import spawn_worker, wait_until


def _workers(config: QueueConfig) -> list[WorkerRecord]:
    async def read() -> list[WorkerRecord]:
        driver = open_driver(config)
        try:
            return await live_workers(driver.control())
        finally:
            await driver.close()

    return asyncio.run(read())


def test_processes_are_started_restarted_after_a_crash_and_drained_on_sigterm(
    config: QueueConfig, tmp_path: Path
) -> None:
    config = dataclasses.replace(config, retry_after_s=5)
    ledger = tmp_path / "ledger"
    supervisor = spawn_worker(config, "--processes", "2", "--sleep", "0.2",
                              log=tmp_path / "supervisor.log")  # fmt: skip
    try:
        wait_until(lambda: len(_workers(config)) == 2, what="two workers")
        first = {record.pid for record in _workers(config)}
        assert supervisor.pid not in first

        Queue.dispatch_many(config, [Record(str(ledger)) for _ in range(20)])
        wait_until(lambda: len(read_ledger(ledger)) == 20, what="the jobs to run")

        crashed = min(first)
        os.kill(crashed, signal.SIGKILL)
        wait_until(lambda: len({r.pid for r in _workers(config)} - first) == 1, timeout_s=30,
                   what="the crashed worker to be replaced")  # fmt: skip
        assert (
            "exited with status -9; starting it again" in (tmp_path / "supervisor.log").read_text()
        )

        supervisor.send_signal(signal.SIGTERM)
        assert supervisor.wait(timeout=30) == 0
        wait_until(lambda: _workers(config) == [], what="the records to go")
    finally:
        supervisor.kill()


def test_with_stop_when_empty_the_supervisor_exits_once_every_worker_has(
    config: QueueConfig, tmp_path: Path
) -> None:
    ledger = tmp_path / "ledger"
    Queue.dispatch_many(config, [Record(str(ledger)) for _ in range(10)])
    supervisor = spawn_worker(config, "--processes", "2", "--stop-when-empty",
                              log=tmp_path / "supervisor.log")  # fmt: skip
    try:
        assert supervisor.wait(timeout=60) == 0
    finally:
        supervisor.kill()
    assert len(read_ledger(ledger)) == 10
    assert len({pid for *_, pid in read_ledger(ledger)} - {supervisor.pid}) >= 1
