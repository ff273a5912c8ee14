"""Publishing metrics never holds jobs up: with the backend's control store failing every write,
a worker runs every job, warns once, and publishes again once the store is back."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from runequeue import Queue, QueueConfig
from runequeue.drivers.memory import default_store
from runequeue.drivers.memory_control import MemoryControl
from runequeue.errors import DriverUnavailable
from runequeue.metrics_history import per_minute, read
from tests.support.jobs import Record, read_ledger
from tests.workers import run_worker


class FlakyControl(MemoryControl):
    """A control store that fails while ``broken``."""

    broken = True

    async def put(self, namespace: str, name: str, value: str, ttl_s: float | None = None) -> None:
        if self.broken:
            raise DriverUnavailable("control store away")
        await super().put(namespace, name, value, ttl_s)

    async def get_all(self, namespace: str) -> dict[str, str]:
        if self.broken:
            raise DriverUnavailable("control store away")
        return await super().get_all(namespace)


def test_failing_metric_writes_hold_no_job_up(
    backend_for: Callable[[str], QueueConfig], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config = backend_for("memory")
    store = default_store()
    store.reset()
    flaky = FlakyControl()
    store.control = flaky
    ledger = tmp_path / "ledger"
    Queue.dispatch_many(config, [Record(str(ledger)) for _ in range(20)])

    with caplog.at_level(logging.WARNING, logger="runequeue.worker"):
        asyncio.run(run_worker(config))

    assert len(read_ledger(ledger)) == 20  # every job ran
    warnings = [r.getMessage() for r in caplog.records if "could not publish" in r.getMessage()]
    assert len(warnings) == 1  # once, not per flush

    flaky.broken = False  # the store is back: the next worker's figures arrive
    Queue.dispatch_many(config, [Record(str(ledger)) for _ in range(5)])
    asyncio.run(run_worker(config))
    now = int(time.time() // 60)
    minutes = asyncio.run(read(flaky, first_minute=now - 2, last_minute=now))
    assert sum(t.done for t in per_minute(minutes, now - 2, now)) == 5
    store.reset()
