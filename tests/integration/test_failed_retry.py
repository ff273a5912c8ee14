"""Issue 10, items 1, 5 and 9: retrying failed jobs on every pair of failed_jobs database (SQLite,
PostgreSQL, MariaDB) and job connection (redis, database, sync); sync rows that this process cannot
build; ids that are never reused; rows named by uuid or uuid prefix."""

from __future__ import annotations

import asyncio
import dataclasses
import threading
from collections.abc import Callable
from pathlib import Path

import msgspec
import pytest
import sqlalchemy as sa

from runequeue import Queue, QueueConfig
from runequeue.db_engine import create_engine
from runequeue.drivers import open_driver
from runequeue.drivers.base import Outgoing
from runequeue.errors import AmbiguousJobRef
from runequeue.failed_job import FailedJob
from runequeue.failed_jobs import FailedJobs
from runequeue.failed_store import FailedJobStore
from runequeue.schema import failed_jobs, jobs, migrate, run_migrations
from tests.support.jobs import Boom, FailsUntilFixed, Record, read_ledger
from tests.workers import failed_jobs as stored_failures
from tests.workers import push_raw, work

DATABASES = ["sqlite", "postgresql", "mysql"]
CONNECTIONS = ["redis", "database", "sync"]


@pytest.fixture(params=[(db, conn) for db in DATABASES for conn in CONNECTIONS],
                ids=lambda pair: f"{pair[0]}-{pair[1]}")  # fmt: skip
def pair(
    request: pytest.FixtureRequest, config: QueueConfig, database_url_for: Callable[[str], str]
) -> QueueConfig:
    """failed_jobs on each database, jobs sent to each connection (database: the same database)."""
    kind, connection = request.param
    url = database_url_for(kind)
    return dataclasses.replace(config, driver=connection, database_url=url)


def _fail_once(cfg: QueueConfig, tmp_path: Path) -> FailedJob:
    """Dispatch a job that fails until ``tmp_path/fixed`` exists, and let it fail."""
    job = FailsUntilFixed(ledger=str(tmp_path / "ledger"), fix=str(tmp_path / "fixed"))
    if cfg.driver == "sync":
        with pytest.raises(Boom):
            Queue.dispatch(cfg, job)
    else:
        Queue.dispatch(cfg, job)
        work(cfg)
    (failure,) = stored_failures(cfg)
    assert failure.connection == cfg.driver
    return failure


def _runs_after_retry(cfg: QueueConfig, tmp_path: Path) -> list[str]:
    """The ledger's events after the first failure: what the retries made happen."""
    if cfg.driver != "sync":
        work(cfg)
    return [event for event, *_ in read_ledger(tmp_path / "ledger")][1:]


# Item 1: retry works on every pair (SQLite + database was "database is locked" after ~6 s).


def test_retry_puts_the_job_back_on_every_pair(pair: QueueConfig, tmp_path: Path) -> None:
    failure = _fail_once(pair, tmp_path)
    (tmp_path / "fixed").touch()
    with FailedJobs(pair) as failed:
        (outcome,) = failed.retry([failure.id])
    assert (outcome.status, outcome.job_id) == ("retried", failure.job_id), outcome
    assert stored_failures(pair) == []
    assert _runs_after_retry(pair, tmp_path) == ["start", "done"]


def test_concurrent_retries_of_one_row_push_it_once(pair: QueueConfig, tmp_path: Path) -> None:
    failure = _fail_once(pair, tmp_path)
    (tmp_path / "fixed").touch()
    statuses: list[str] = []
    barrier = threading.Barrier(4)

    def retry() -> None:
        with FailedJobs(pair) as failed:
            barrier.wait()
            statuses.extend(outcome.status for outcome in failed.retry([failure.id]))

    threads = [threading.Thread(target=retry) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert sorted(statuses) == ["missing", "missing", "missing", "retried"]
    if pair.driver != "sync":
        assert Queue.size(pair) == 1
    assert _runs_after_retry(pair, tmp_path) == ["start", "done"]
    assert stored_failures(pair) == []


def test_a_failed_push_keeps_the_row(config: QueueConfig, database_url: str) -> None:
    """Redis down: the retry is an error and the row stays, untouched."""
    store = FailedJobStore(database_url)
    store.record(FailedJob("kept", "redis", "default", b"{}", "tests.Boom: boom"))
    store.close()
    down = dataclasses.replace(
        config, database_url=database_url, redis_url="redis://127.0.0.1:1/0", dispatch_timeout_s=0.5
    )
    with FailedJobs(down) as failed:
        (before,) = failed.list()
        (outcome,) = failed.retry([before.id])
        assert outcome.status == "error" and "could not dispatch" in outcome.detail
        assert failed.list() == [before]


def test_a_job_still_in_the_jobs_table_is_not_queued_twice(
    backend_for: Callable[[str], QueueConfig], tmp_path: Path
) -> None:
    """The same uuid is still in `jobs` (a worker has not yet moved it): the retry changes
    nothing, and says why."""
    cfg = backend_for("database-sqlite")
    store = FailedJobStore(cfg.database_url)
    store.record(FailedJob("twice", "database", "default", b"{}", "tests.Boom: boom"))
    store.close()
    push_raw(cfg, [Outgoing("twice", "default", b"{}")])
    with FailedJobs(cfg) as failed:
        (row,) = failed.list()
        (outcome,) = failed.retry([row.id])
        assert outcome.status == "error" and "still in the jobs table" in outcome.detail
        assert failed.list() == [row]
    assert Queue.size(cfg) == 1


def test_a_job_still_in_redis_is_not_reported_retried(config: QueueConfig, tmp_path: Path) -> None:
    """Its failure was recorded but not yet purged from Redis (the id is still in the queue's
    payload hash and outbox): a push would skip it, so the row stays until a worker purges it."""
    ledger = tmp_path / "ledger"
    job_id = Queue.dispatch(config, Record(ledger=str(ledger)))

    async def bury_without_purging() -> bytes:
        driver = open_driver(config)
        try:
            (taken,) = (await driver.reserve("default", 1, lease_s=30, default_tries=1)).jobs
            assert await driver.bury(taken, "tests.Boom: boom")
            return taken.raw
        finally:
            await driver.close()

    raw = asyncio.run(bury_without_purging())
    store = FailedJobStore(config.database_url)
    store.record(FailedJob(job_id, "redis", "default", raw, "tests.Boom: boom"))
    store.close()
    with FailedJobs(config) as failed:
        (row,) = failed.list()
        (outcome,) = failed.retry([row.id])
        assert outcome.status == "error", outcome
        assert f"job {job_id} is still in redis" in outcome.detail
        assert "try again in a moment" in outcome.detail
        assert [job.job_id for job in failed.list()] == [job_id]
    assert Queue.size(config) == 0

    work(config)  # a worker records the buried job (again) and purges it
    with FailedJobs(config) as failed:
        (outcome,) = failed.retry("all")
        assert outcome.status == "retried", outcome
    work(config)
    assert [event for event, *_ in read_ledger(ledger)] == ["done"]


# Item 5: a sync row this process cannot build stays as it was.


def _envelope(job: str, data: dict[str, object]) -> bytes:
    return msgspec.json.encode(
        {"id": "4f1c", "job": job, "data": data, "queue": "default", "created_at": 0}
    )


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (
            _envelope("myapp.NotImported", {}),
            "job class 'myapp.NotImported' is not registered in this process; "
            "name the module that defines it with --import (or RUNE_IMPORTS)",
        ),
        (_envelope("tests.TypedUser", {"user_id": "abc"}), "cannot build the job"),
        (b"\x80 not json", "cannot build the job"),
    ],
)
def test_sync_retry_that_cannot_build_the_job_leaves_the_row(
    database_url: str, raw: bytes, expected: str
) -> None:
    store = FailedJobStore(database_url)
    store.record(FailedJob("4f1c", "sync", "default", raw, "tests.Boom: the original error"))
    store.close()
    with FailedJobs(QueueConfig(driver="sync", database_url=database_url)) as failed:
        (before,) = failed.list()
        (outcome,) = failed.retry([before.id])
        assert outcome.status == "error"
        assert expected in outcome.detail
        assert failed.list() == [before]  # same id, exception and failed_at


def test_sync_retry_that_fails_again_keeps_its_row_with_the_new_error(
    sqlite_url: str, tmp_path: Path
) -> None:
    cfg = QueueConfig(driver="sync", database_url=sqlite_url)
    first = _fail_once(cfg, tmp_path)
    with FailedJobs(cfg) as failed:
        (outcome,) = failed.retry([first.id])
        assert outcome.status == "error" and "failed again: Boom: not fixed yet" in outcome.detail
        (again,) = failed.list()
    assert (again.id, again.job_id) == (first.id, first.job_id)
    assert again.failed_at >= first.failed_at
    assert again.exception.startswith("tests.support.jobs.Boom: not fixed yet")


# Item 9: ids are never reused, and a row can be named by its uuid.


def _record(store: FailedJobStore, job_id: str) -> int:
    store.record(FailedJob(job_id, "redis", "default", b"{}", "tests.Boom: boom"))
    return next(job.id for job in store.all() if job.job_id == job_id)


def test_ids_are_not_reused_after_forget(database_url: str) -> None:
    store = FailedJobStore(database_url)
    try:
        _record(store, "first")
        second = _record(store, "second")
        with FailedJobs(QueueConfig(database_url=database_url)) as failed:
            assert failed.forget(second) is True
        assert _record(store, "third") > second
        with FailedJobs(QueueConfig(database_url=database_url)) as failed:
            assert failed.flush() == 2
        assert _record(store, "fourth") > second + 1
    finally:
        store.close()


def _old_style_tables(url: str) -> None:
    """The tables as `rune migrate` made them before ids became AUTOINCREMENT."""
    old = sa.MetaData()
    for table in (jobs, failed_jobs):
        copy = table.to_metadata(old)
        copy.dialect_options["sqlite"]["autoincrement"] = False
    engine = create_engine(url, create=True)
    old.create_all(engine)
    engine.dispose()


def test_migrate_upgrades_old_sqlite_tables_keeping_rows_and_ids(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'old.sqlite3'}"
    _old_style_tables(url)
    store = FailedJobStore(url)
    ids = [_record(store, name) for name in ("a", "b", "c")]
    store.forget(ids[0])
    store.close()
    queued = QueueConfig(driver="database", database_url=url)
    push_raw(queued, [Outgoing("queued", "default", b"{}")])

    migration = run_migrations(url)
    # (the tables that came after ids became AUTOINCREMENT: an old database gets them)
    created = ["job_batches", "job_control", "job_limits", "job_locks"]
    assert (migration.created, migration.upgraded) == (created, ["failed_jobs", "jobs"])
    assert migration.describe("here").startswith(
        "created job_batches, job_control, job_limits, job_locks; upgraded failed_jobs, jobs"
    )
    assert run_migrations(url).describe("here") == "nothing to do: every table exists in here"
    assert migrate(url) == []

    store = FailedJobStore(url)
    try:
        assert [(job.id, job.job_id) for job in store.all()] == [(ids[1], "b"), (ids[2], "c")]
        store.forget(ids[2])
        assert _record(store, "d") > ids[2]  # reused before the upgrade
    finally:
        store.close()
    assert Queue.size(queued) == 1
    engine = create_engine(url)
    try:
        indexes = {
            table: {index["name"] for index in sa.inspect(engine).get_indexes(table)}
            for table in ("jobs", "failed_jobs")
        }
        with engine.connect() as conn:
            tables = conn.exec_driver_sql("SELECT name FROM sqlite_master WHERE type='table'")
            names = set(tables.scalars())
    finally:
        engine.dispose()
    assert indexes == {
        "jobs": {"jobs_ready", "jobs_leases", "jobs_dead", "jobs_recovered"},
        "failed_jobs": {"ix_failed_jobs_failed_at"},
    }
    assert not any(name.startswith("_runequeue_old") for name in names)


def test_rows_are_named_by_id_uuid_or_unique_prefix(database_url: str) -> None:
    store = FailedJobStore(database_url)
    first = _record(store, "abcdef0123456789abcdef0123456789")
    second = _record(store, "abcdef0199999999abcdef0199999999")
    store.close()
    with FailedJobs(QueueConfig(database_url=database_url)) as failed:
        assert failed.resolve(str(first)) == first
        assert failed.resolve(first) == first
        assert failed.resolve("abcdef0123456789abcdef0123456789") == first
        assert failed.resolve("ABCDEF0199") == second
        assert failed.resolve("abcdef01-9999-9999-abcd-ef0199999999") == second
        assert failed.resolve("987654") is None
        assert failed.resolve("abcdef") is None  # a prefix shorter than 8 names nothing
        assert failed.resolve("0000000000") is None
        with pytest.raises(AmbiguousJobRef, match=r"ids \d+, \d+"):
            failed.resolve("abcdef01")
        found = failed.find("abcdef0123")
        assert found is not None and found.id == first
        (ambiguous,) = failed.retry(["abcdef01"])
        assert ambiguous.status == "error" and "more than one" in ambiguous.detail
        assert failed.forget("abcdef0199") is True
        assert failed.forget("abcdef0199") is False
        (missing,) = failed.retry(["987654"])
        assert (missing.status, missing.row_id, missing.ref) == ("missing", 987654, "987654")
        assert [job.id for job in failed.list()] == [first]
