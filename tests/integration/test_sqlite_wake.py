"""An idle SQLite worker is woken by another process's commit (``PRAGMA data_version``), and
only by one: it neither sleeps through a dispatch nor polls the jobs table while nothing
happens."""

from __future__ import annotations

import asyncio
import threading
import time

from runequeue.drivers.base import Outgoing
from runequeue.drivers.database import DatabaseDriver, DatabaseQueue
from runequeue.schema import migrate


def _waited(url: str, timeout_s: float, push_after_s: float | None) -> float:
    """Seconds a worker's idle wait of ``timeout_s`` lasted; another connection pushes a job
    ``push_after_s`` into it."""

    def push_later() -> None:
        assert push_after_s is not None
        time.sleep(push_after_s)
        other = DatabaseQueue(url)  # another connection, as another process's would be
        try:
            other.push([Outgoing("woken", "default", b"{}")])
        finally:
            other.close()

    async def scenario() -> float:
        driver = DatabaseDriver(url)
        try:
            assert (await driver.reserve("default", 1, lease_s=30, default_tries=3)).jobs == []
            if push_after_s is not None:
                threading.Thread(target=push_later, daemon=True).start()
            started = time.monotonic()
            await driver.wait(["default"], timeout_s)
            return time.monotonic() - started
        finally:
            await driver.close()

    return asyncio.run(scenario())


def test_an_idle_sqlite_worker_waits_until_another_connection_commits(tmp_path: object) -> None:
    url = f"sqlite:///{tmp_path}/wake.sqlite3"
    migrate(url)
    assert _waited(url, 1.0, push_after_s=None) >= 0.9  # nothing committed: the whole wait
    assert _waited(url, 10.0, push_after_s=0.3) < 5.0  # woken by the commit, not the timeout
