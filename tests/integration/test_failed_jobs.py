"""The failed_jobs table on SQLite, PostgreSQL and MariaDB: every failure path lands there, and the
commands and Python API over it do what they say."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
from pathlib import Path

import msgspec
import pytest
from click.testing import CliRunner

from runequeue import Queue, QueueConfig
from runequeue.cli import cli
from runequeue.drivers import open_driver
from runequeue.drivers.base import Outgoing
from runequeue.failed_job import FailedJob
from runequeue.failed_jobs import FailedJobs
from runequeue.failed_store import FailedJobStore
from tests.support.jobs import (
    AlwaysFails,
    FailsUntilFixed,
    HookRaises,
    Record,
    Sleepy,
    read_ledger,
)
from tests.workers import failed_jobs, work


@pytest.fixture
def cfg(config: QueueConfig, database_url: str) -> QueueConfig:
    """Redis for the queue, each database backend for failed_jobs."""
    return dataclasses.replace(config, database_url=database_url)


def _inject(config: QueueConfig, job_id: str, raw: bytes) -> None:
    async def push() -> None:
        driver = open_driver(config)
        try:
            await driver.push([Outgoing(job_id, "default", raw)])
        finally:
            await driver.close()

    asyncio.run(push())


def test_every_failure_path_lands_in_failed_jobs(cfg: QueueConfig, tmp_path: Path) -> None:
    ledger = str(tmp_path / "ledger")
    exhausted = Queue.dispatch(cfg, AlwaysFails(ledger=ledger))
    timed_out = Queue.dispatch(cfg, Sleepy(ledger=ledger, seconds=30), timeout=0.2, tries=1)
    hook_raised = Queue.dispatch(cfg, HookRaises(ledger=ledger))
    _inject(cfg, "undecodable", b"\x80\x04 pickle-ish")
    _inject(
        cfg,
        "unknown",
        b'{"id":"unknown","job":"os.system","data":{},"queue":"default","created_at":0}',
    )
    _inject(
        cfg,
        "invalid",
        b'{"id":"invalid","job":"tests.TypedUser","data":{"user_id":"abc"},"queue":"default","created_at":0}',
    )
    sync_config = dataclasses.replace(cfg, driver="sync")
    with pytest.raises(Exception, match="always fails"):
        Queue.dispatch(sync_config, AlwaysFails(ledger=ledger))

    work(cfg)

    reasons = {job.job_id: job.summary for job in failed_jobs(cfg)}
    assert reasons[exhausted].startswith("tests.support.jobs.Boom")
    assert reasons[timed_out].startswith("runequeue.errors.JobTimeout")
    assert reasons[hook_raised].startswith("tests.support.jobs.Boom")
    assert reasons["undecodable"].startswith("runequeue.errors.InvalidPayload")
    assert reasons["unknown"].startswith("runequeue.errors.UnknownJob")
    assert reasons["invalid"].startswith("runequeue.errors.InvalidPayload")
    assert len(reasons) == 7  # the six above and the sync failure
    connections = {job.connection for job in failed_jobs(cfg)}
    assert connections == {"redis", "sync"}
    assert Queue.size(cfg) == 0


def test_payload_is_stored_byte_for_byte(cfg: QueueConfig, tmp_path: Path) -> None:
    job_id = Queue.dispatch(cfg, AlwaysFails(ledger=str(tmp_path / "l")))
    work(cfg)
    (failure,) = failed_jobs(cfg)
    envelope = msgspec.json.decode(failure.payload)
    assert envelope["id"] == job_id and envelope["job"] == "tests.AlwaysFails"
    assert failure.failed_at.tzinfo is dt.UTC


def test_retried_job_that_succeeds_leaves_the_table(cfg: QueueConfig, tmp_path: Path) -> None:
    ledger = tmp_path / "ledger"
    fix = tmp_path / "fixed"
    job_id = Queue.dispatch(cfg, FailsUntilFixed(ledger=str(ledger), fix=str(fix)))
    work(cfg)
    (failure,) = failed_jobs(cfg)

    fix.touch()  # the bug is fixed; now retry
    with FailedJobs(cfg) as failed:
        (outcome,) = failed.retry([failure.id])
    assert (outcome.status, outcome.job_id) == ("retried", job_id)
    assert failed_jobs(cfg) == []
    work(cfg)
    assert [(event, attempt) for event, _, attempt, _ in read_ledger(ledger)] == [
        ("start", 1),
        ("start", 1),  # attempts were reset: the retried job starts again at 1
        ("done", 1),
    ]
    assert failed_jobs(cfg) == []


def test_retried_job_that_fails_again_comes_back_with_a_fresh_failed_at(
    cfg: QueueConfig, tmp_path: Path
) -> None:
    job_id = Queue.dispatch(cfg, AlwaysFails(ledger=str(tmp_path / "l")))
    work(cfg)
    (first,) = failed_jobs(cfg)
    with FailedJobs(cfg) as failed:
        failed.retry("all")
    work(cfg)
    (again,) = failed_jobs(cfg)
    assert again.job_id == job_id
    assert again.failed_at >= first.failed_at


def test_retry_reports_unknown_ids_and_goes_on(cfg: QueueConfig, tmp_path: Path) -> None:
    Queue.dispatch(cfg, AlwaysFails(ledger=str(tmp_path / "l")))
    work(cfg)
    (failure,) = failed_jobs(cfg)
    with FailedJobs(cfg) as failed:
        outcomes = failed.retry([987654, failure.id])
    assert [o.status for o in outcomes] == ["missing", "retried"]


def test_retry_all_of_one_queue(cfg: QueueConfig, tmp_path: Path) -> None:
    ledger = str(tmp_path / "l")
    Queue.dispatch(cfg, AlwaysFails(ledger=ledger), queue="emails")
    Queue.dispatch(cfg, AlwaysFails(ledger=ledger), queue="reports")
    work(cfg, queues=("emails", "reports"))
    with FailedJobs(cfg) as failed:
        outcomes = failed.retry("all", queue="emails")
        assert [o.status for o in outcomes] == ["retried"]
        assert [job.queue for job in failed.list()] == ["reports"]
    assert Queue.size(cfg, "emails") == 1


def test_forget_flush_and_prune(database_url: str) -> None:
    store = FailedJobStore(database_url)
    now = dt.datetime.now(dt.UTC)
    for age_hours, job_id in [(0, "new"), (30, "old"), (50, "older")]:
        store.record(
            FailedJob(job_id, "redis", "q", b"{}", "E: x", now - dt.timedelta(hours=age_hours))
        )
    with FailedJobs(QueueConfig(database_url=database_url)) as failed:
        ids = {job.job_id: job.id for job in failed.list()}
        assert failed.forget(ids["older"]) is True
        assert failed.forget(ids["older"]) is False
        assert failed.prune(hours=24) == 1
        assert [job.job_id for job in failed.list()] == ["new"]
        assert failed.flush() == 1
        assert failed.list() == []
    store.close()


def test_record_is_idempotent_by_job_id(database_url: str) -> None:
    store = FailedJobStore(database_url)
    store.record(FailedJob("same", "redis", "q", b"{}", "first"))
    store.record(FailedJob("same", "redis", "q", b"{}", "second"))
    assert [job.exception for job in store.all()] == ["second"]
    store.close()


def run_cli(args: list[str], config: QueueConfig, *, exit_code: int = 0) -> str:
    env = {
        "QUEUE_DRIVER": config.driver,
        "REDIS_URL": config.redis_url,
        "QUEUE_REDIS_PREFIX": config.redis_prefix,
        "DATABASE_URL": config.database_url,
        "COLUMNS": "200",
    }
    result = CliRunner().invoke(cli, args, env=env, catch_exceptions=False)
    assert result.exit_code == exit_code, result.output
    return result.output


def test_commands(cfg: QueueConfig, tmp_path: Path) -> None:
    assert "nothing to do" in run_cli(["migrate"], cfg)
    Queue.dispatch(cfg, AlwaysFails(ledger=str(tmp_path / "l")))
    Queue.dispatch(cfg, AlwaysFails(ledger=str(tmp_path / "l")))
    work(cfg)
    rows = [
        msgspec.json.decode(line) for line in run_cli(["queue:failed", "--json"], cfg).splitlines()
    ]
    assert [row["job"] for row in rows] == ["tests.AlwaysFails"] * 2
    table = run_cli(["queue:failed"], cfg)
    assert table.count("tests.AlwaysFails") == 2
    assert table.count("Boom: always fails") == 2

    first, second = (row["id"] for row in rows)
    assert "retried" in run_cli(["queue:retry", str(first)], cfg)
    assert Queue.size(cfg) == 1
    assert "missing" in run_cli(["queue:retry", str(first)], cfg, exit_code=1)
    assert "forgot" in run_cli(["queue:forget", str(second)], cfg)
    assert "deleted 0" in run_cli(["queue:prune-failed", "--hours", "1"], cfg)
    assert "deleted 0" in run_cli(["queue:flush"], cfg)
    assert "no failed jobs" in run_cli(["queue:failed"], cfg)


def test_migrate_creates_the_table_once(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'fresh.db'}"
    runner = CliRunner()
    first = runner.invoke(cli, ["migrate", "--database-url", url])
    second = runner.invoke(cli, ["migrate", "--database-url", url])
    assert "created failed_jobs" in first.output
    assert "nothing to do" in second.output


def test_worker_without_the_table_says_to_migrate(config: QueueConfig, tmp_path: Path) -> None:
    cfg = dataclasses.replace(config, database_url=f"sqlite:///{tmp_path / 'empty.db'}")
    Queue.dispatch(cfg, Record(ledger=str(tmp_path / "l")))
    env = {"QUEUE_DRIVER": "redis", "REDIS_URL": cfg.redis_url,
           "QUEUE_REDIS_PREFIX": cfg.redis_prefix, "DATABASE_URL": cfg.database_url}  # fmt: skip
    result = CliRunner().invoke(cli, ["queue:work", "--stop-when-empty"], env=env)
    assert result.exit_code != 0
    assert "rune migrate" in result.output
    assert Queue.size(cfg) == 1  # the job is kept
