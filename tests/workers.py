"""Helpers to run a worker in this process or as a `rune queue:work` subprocess."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from runequeue import QueueConfig, Worker, WorkerOptions
from runequeue.drivers import open_driver
from runequeue.drivers.base import Outgoing
from runequeue.failed_job import FailedJob
from runequeue.failed_store import FailedJobStore

ROOT = Path(__file__).resolve().parent.parent


def options(config: QueueConfig, **overrides: Any) -> WorkerOptions:
    """Test defaults: stop when empty, short sleeps and sweeps."""
    base = WorkerOptions(
        queues=(config.queue_name,),
        stop_when_empty=True,
        sleep_s=0.2,
        sweep_interval_s=0.2,
        lease_s=config.retry_after_s,
        concurrency=4,
    )
    return dataclasses.replace(base, **overrides)


async def run_worker(config: QueueConfig, **overrides: Any) -> Worker:
    driver = open_driver(config)
    store = FailedJobStore(config.database_url)
    worker = Worker(
        driver, store, options(config, **overrides), connection=config.driver, codec=config.codec
    )
    try:
        await worker.run()
    finally:
        await driver.close()
        store.close()
    return worker


def work(config: QueueConfig, **overrides: Any) -> Worker:
    return asyncio.run(run_worker(config, **overrides))


def failed_jobs(config: QueueConfig, queue: str | None = None) -> list[FailedJob]:
    store = FailedJobStore(config.database_url)
    try:
        return store.all(queue)
    finally:
        store.close()


def spawn_worker(config: QueueConfig, *args: str, log: Path) -> subprocess.Popen[bytes]:
    """`rune queue:work` in a child process, importing the test jobs, logging to ``log``."""
    env = {
        **os.environ,
        "QUEUE_DRIVER": config.driver,
        "REDIS_URL": config.redis_url,
        "QUEUE_REDIS_PREFIX": config.redis_prefix,
        "QUEUE_RETRY_AFTER": str(config.retry_after_s),
        "DATABASE_URL": config.database_url,
    }
    command = [sys.executable, "-m", "runequeue", "queue:work", "--import", "tests.support.jobs"]
    with open(log, "ab") as out:
        return subprocess.Popen([*command, *args], cwd=ROOT, env=env, stdout=out, stderr=out)


def wait_until(
    condition: Callable[[], bool], timeout_s: float = 20, what: str = "condition"
) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def push_raw(config: QueueConfig, items: list[Outgoing]) -> None:
    """Put bytes straight into the backend, as an attacker with write access could."""

    async def push() -> None:
        driver = open_driver(config)
        try:
            await driver.push(items)
        finally:
            await driver.close()

    asyncio.run(push())


def peak_rss_mib(process: subprocess.Popen[bytes]) -> float:
    """The peak resident memory of a running child (VmHWM), sampled until it exits."""
    peak = 0.0
    while process.poll() is None:
        try:
            status = Path(f"/proc/{process.pid}/status").read_text()
        except OSError:
            break
        for line in status.splitlines():
            if line.startswith("VmHWM:"):
                peak = max(peak, int(line.split()[1]) / 1024)
        time.sleep(0.1)
    return peak
