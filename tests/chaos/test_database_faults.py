"""The database under stress: R8 (down while a failure is being recorded) on both drivers, and
R18 (many workers competing for one jobs table)."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from runequeue import Queue, QueueConfig
from runequeue.failed_store import FailedJobStore
from runequeue.schema import migrate
from tests.chaos.report import Result
from tests.support.jobs import AlwaysFails, Record, SleepThenFail, read_events
from tests.support.proxy import Proxy
from tests.workers import failed_jobs, run_worker, spawn_worker


def _through(proxy: Proxy, url: str) -> str:
    return make_url(url).set(port=proxy.port).render_as_string(hide_password=False)


def test_r8_redis_driver_keeps_the_failure_in_its_outbox_while_the_database_is_down(
    config: QueueConfig,
    postgresql_database: str,
    results: list[Result],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    migrate(postgresql_database)
    direct = FailedJobStore(postgresql_database)  # bypasses the proxy
    direct.flush()
    url = make_url(postgresql_database)
    proxy = Proxy(url.host or "127.0.0.1", url.port or 5432)
    cfg = dataclasses.replace(config, database_url=_through(proxy, postgresql_database))
    ledger = str(tmp_path / "ledger")

    async def scenario() -> tuple[str, float]:
        worker = asyncio.create_task(run_worker(cfg, stop_when_empty=False, max_time_s=5.0))
        await asyncio.sleep(0.5)  # started; the failed_jobs table was found
        proxy.cut()
        job_id = await Queue.dispatch_async(cfg, AlwaysFails(ledger=ledger), tries=1)
        await Queue.aclose_connections()
        await asyncio.sleep(2.0)  # the job failed; recording it cannot reach the database
        assert await asyncio.to_thread(direct.all) == []
        assert "kept in the outbox" in caplog.text
        proxy.restore()
        back = time.monotonic()
        while not await asyncio.to_thread(direct.all):
            await asyncio.sleep(0.05)
        recorded_after = time.monotonic() - back
        await worker
        return job_id, recorded_after

    try:
        job_id, recorded_after = asyncio.run(scenario())
    finally:
        proxy.close()
    rows = direct.all()
    direct.close()
    results.append(
        Result("R8", "redis", 1, "PostgreSQL (failed_jobs) cut off while the failure is recorded",
               0, len(rows) - 1, None,
               f"kept in the Redis outbox; recorded {recorded_after:.1f} s after the database "
               "returned")
    )  # fmt: skip
    assert [row.job_id for row in rows] == [job_id]
    assert Queue.size(cfg) == 0


def test_r8_database_driver_keeps_the_job_leased_while_the_database_is_down(
    postgresql_database: str, database_url_for: Callable[[str], str], results: list[Result],
    tmp_path: Path,
) -> None:  # fmt: skip
    database_url_for("postgresql")
    direct = FailedJobStore(postgresql_database)
    url = make_url(postgresql_database)
    proxy = Proxy(url.host or "127.0.0.1", url.port or 5432)
    cfg = QueueConfig(driver="database", database_url=_through(proxy, postgresql_database),
                      retry_after_s=2)  # fmt: skip
    ledger = tmp_path / "ledger"
    job_id = Queue.dispatch(cfg, SleepThenFail(ledger=str(ledger), seconds=1.0))

    async def scenario() -> None:
        worker = asyncio.create_task(
            run_worker(cfg, stop_when_empty=False, max_time_s=12.0, sweep_interval_s=0.5)
        )
        while not read_events(ledger):
            await asyncio.sleep(0.05)
        proxy.cut()  # the job is running; when it fails, nothing can be written
        await asyncio.sleep(4.0)
        assert await asyncio.to_thread(direct.all) == []
        proxy.restore()
        await worker

    try:
        asyncio.run(scenario())
    finally:
        proxy.close()
    rows = direct.all()
    direct.close()
    results.append(
        Result("R8", "database-postgresql", 1, "PostgreSQL cut off while the job fails", 0,
               len(rows) - 1, None,
               "the job stayed leased; the sweeper failed it once the database was back")
    )  # fmt: skip
    assert [row.job_id for row in rows] == [job_id]
    assert Queue.size(dataclasses.replace(cfg, database_url=postgresql_database)) == 0


@pytest.mark.parametrize(
    ("kind", "workers", "jobs"), [("postgresql", 8, 2000), ("sqlite", 3, 1000), ("mysql", 4, 1000)]
)
def test_r18_competing_workers_never_take_the_same_job(
    kind: str,
    workers: int,
    jobs: int,
    database_url_for: Callable[[str], str],
    results: list[Result],
    scale: int,
    tmp_path: Path,
) -> None:
    config = QueueConfig(driver="database", database_url=database_url_for(kind))
    ledger = tmp_path / "ledger"
    total = jobs * scale
    ids = Queue.dispatch_many(config, [Record(ledger=str(ledger)) for _ in range(total)])
    started = time.monotonic()
    processes = [
        spawn_worker(config, "--stop-when-empty", "--concurrency", "8", log=tmp_path / f"w{n}.log")
        for n in range(workers)
    ]
    try:
        codes = [process.wait(timeout=300) for process in processes]
    finally:
        for process in processes:
            process.kill()
    elapsed = time.monotonic() - started
    runs = Counter(e.job_id for e in read_events(ledger))
    logs = "".join((tmp_path / f"w{n}.log").read_text() for n in range(workers))
    results.append(
        Result("R18", f"database-{kind}", total, f"{workers} worker processes x 8",
               len(set(ids) - set(runs)), sum(runs.values()) - len(runs), None,
               f"{total / elapsed:,.0f} jobs/s including worker start-up; "
               f"{logs.count('database is locked')} lock errors surfaced")
    )  # fmt: skip
    assert codes == [0] * workers
    assert set(runs) == set(ids)
    assert max(runs.values()) == 1
    assert failed_jobs(config) == []
    assert "FAIL" not in logs
