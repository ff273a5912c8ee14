"""Values runequeue never writes, written straight into its tables (issue 11, items 1 and 2).

R22: rows of the database driver's ``jobs`` table holding what a column can hold but no job is (a
BLOB, text that is not UTF-8, a number, an id that is not text). Each ends in failed_jobs with the
reason; the valid jobs behind them run; the worker never dies.

R23: failures PostgreSQL's ``text`` cannot store as they are (a NUL byte in the payload or in the
exception). They are recorded with the NUL escaped, and one failure that cannot be recorded does
not hold back the others.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import sqlalchemy as sa

from runequeue import Queue, QueueConfig
from runequeue.db_engine import create_engine
from runequeue.drivers import open_driver
from runequeue.drivers.base import Outgoing
from runequeue.failed_job import FailedJob
from runequeue.failed_store import FailedJobStore
from runequeue.schema import migrate
from tests.chaos.report import Result
from tests.support.jobs import FailsWithNul, Record, read_events
from tests.workers import failed_jobs, push_raw, work

_INSERT = (
    "INSERT INTO jobs (uuid, queue, payload, payload_bytes, state, attempts, available_at, "
    "created_at) VALUES ({uuid}, 'default', {payload}, {size}, 0, {attempts}, 0, 0)"
)

# (uuid, payload, payload_bytes, attempts) as SQL literals, per database.
_ODD_TEXT = [
    ("'empty'", "''", "0", "0"),
    ("'json-null'", "'null'", "4", "0"),
    ("'number'", "'42'", "2", "0"),
    ("'escapes'", r"'\x00 \u0000 \\ %s'", "9", "0"),
    ("'nonchar'", "'\uffff\ufffe'", "6", "0"),
]
_HOSTILE_ROWS = {
    "sqlite": [
        *_ODD_TEXT,
        ("'blob-json'", "x'7b7d'", "2", "0"),
        ("'blob-binary'", "x'ff00fe'", "3", "0"),
        ("'not-utf8'", "CAST(x'ff41' AS TEXT)", "2", "0"),
        ("'integer'", "42", "2", "0"),
        ("'real'", "4.5", "3", "0"),
        ("'text-counts'", "'{}'", "'lots'", "'x'"),
        ("x'ff01'", "'{}'", "2", "0"),  # a job id that is a BLOB
        ("CAST(x'fe' AS TEXT)", "'{}'", "2", "0"),  # a job id that is not UTF-8
    ],
    "postgresql": _ODD_TEXT,
    "mysql": [*_ODD_TEXT, ("'invalid-bytes'", "X'ff41'", "2", "0")],  # stored as '?A'
}


def _insert_hostile_rows(url: str, kind: str) -> int:
    engine = create_engine(url)
    rows = _HOSTILE_ROWS[kind]
    try:
        with engine.begin() as conn:
            if kind == "mysql":
                conn.exec_driver_sql("SET SESSION sql_mode = ''")  # let invalid bytes in
            for uuid, payload, size, attempts in rows:
                statement = _INSERT.format(uuid=uuid, payload=payload, size=size, attempts=attempts)
                conn.exec_driver_sql(statement.replace("%", "%%"))
    finally:
        engine.dispose()
    return len(rows)


def _jobs_left(url: str) -> int:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return int(conn.execute(sa.text("SELECT count(*) FROM jobs")).scalar() or 0)
    finally:
        engine.dispose()


@pytest.mark.parametrize("kind", ["sqlite", "postgresql", "mysql"])
def test_r22_hostile_rows_are_failed_and_the_jobs_behind_them_run(
    kind: str,
    backend_for: Callable[[str], QueueConfig],
    results: list[Result],
    tmp_path: Path,
) -> None:
    config = backend_for(f"database-{kind}")
    hostile = _insert_hostile_rows(config.database_url, kind)  # due first: available_at 0
    ledger = tmp_path / "ledger"
    ids = Queue.dispatch_many(config, [Record(ledger=str(ledger)) for _ in range(5)])

    worker = work(config, concurrency=2)  # raises if the worker dies

    done = {event.job_id for event in read_events(ledger)}
    failures = failed_jobs(config)
    results.append(
        Result("R22", f"database-{kind}", 5 + hostile,
               f"{hostile} rows written into jobs: odd text"
               + (", BLOBs, non-UTF-8 text, numbers, ids that are not text" if kind == "sqlite"
                  else ", invalid bytes" if kind == "mysql" else ""),
               5 - len(done & set(ids)), 0, None,
               f"{len(failures)} failed with a reason, 5 valid jobs ran, worker never restarted")
    )  # fmt: skip
    assert done == set(ids)
    assert len(failures) == hostile
    assert all(f.exception.startswith("runequeue.errors.InvalidPayload: ") for f in failures)
    at_reserve = [f for f in failures if "InvalidPayload: the stored " in f.exception]
    assert len(at_reserve) == (4 if kind == "sqlite" else 0)  # two BLOBs, two ids not UTF-8
    assert worker.processed == 5 + hostile - len(at_reserve)  # the others failed by the worker
    assert _jobs_left(config.database_url) == 0


_NUL_PAYLOAD = (
    b'{"id":"nul-payload","job":"tests.Record","data":{"ledger":"\x00"},'
    b'"queue":"default","created_at":0}'
)


@pytest.fixture
def postgresql_failed_jobs(postgresql_database: str) -> str:
    """The session's PostgreSQL database, migrated, with no failed job in it."""
    migrate(postgresql_database)
    store = FailedJobStore(postgresql_database)
    store.flush()
    store.close()
    return postgresql_database


def _escaped(failure: FailedJob) -> bool:
    return "\x00" not in failure.exception and "NUL" in failure.exception.splitlines()[-1]


def test_r23_redis_outbox_records_nul_bytes_on_postgresql(
    config: QueueConfig, postgresql_failed_jobs: str, results: list[Result], tmp_path: Path
) -> None:
    cfg = dataclasses.replace(config, database_url=postgresql_failed_jobs)
    push_raw(cfg, [Outgoing("nul-payload", "default", _NUL_PAYLOAD)])
    failing = Queue.dispatch(cfg, FailsWithNul(ledger=str(tmp_path / "ledger")))

    work(cfg, concurrency=1)

    failures = {f.job_id: f for f in failed_jobs(cfg)}
    results.append(
        Result("R23", "redis", 2, "a NUL byte in a payload and in an exception message, "
               "failed_jobs on PostgreSQL", 2 - len(failures), 0, None,
               f"{len(failures)} of 2 recorded, NUL escaped as \\x00 and said so in the row")
    )  # fmt: skip
    assert set(failures) == {"nul-payload", failing}
    assert failures["nul-payload"].payload == _NUL_PAYLOAD.replace(b"\x00", b"\\x00")
    assert failures[failing].summary == "tests.support.jobs.Boom: a NUL \\x00 in the message"
    assert all(_escaped(failure) for failure in failures.values())
    assert _redis_outbox_size(cfg) == 0


def test_r23_database_driver_records_a_nul_in_the_exception_on_postgresql(
    backend_for: Callable[[str], QueueConfig], results: list[Result], tmp_path: Path
) -> None:
    config = backend_for("database-postgresql")
    failing = Queue.dispatch(config, FailsWithNul(ledger=str(tmp_path / "ledger")))

    work(config, concurrency=1, lease_s=2.0)

    failures = failed_jobs(config)
    results.append(
        Result("R23", "database-postgresql", 1, "a NUL byte in an exception message",
               1 - len(failures), 0, None,
               "recorded at once, NUL escaped as \\x00 and said so in the row")
    )  # fmt: skip
    assert [f.job_id for f in failures] == [failing]
    assert failures[0].summary == "tests.support.jobs.Boom: a NUL \\x00 in the message"
    assert _escaped(failures[0])
    assert _jobs_left(config.database_url) == 0


def test_r23_an_unrecordable_failure_does_not_hold_back_the_others(
    config: QueueConfig,
    postgresql_failed_jobs: str,
    results: list[Result],
    caplog: pytest.LogCaptureFixture,
) -> None:
    cfg = dataclasses.replace(config, database_url=postgresql_failed_jobs)
    too_long = "x" * 100  # failed_jobs.uuid holds 64 characters: this failure cannot be recorded
    push_raw(cfg, [Outgoing(too_long, "default", b"not json")])
    work(cfg, concurrency=1)  # failed; kept in the outbox
    # A job whose last lease expires in a worker that vanished: only a sweep records it.
    expired = Queue.dispatch(cfg, Record(ledger="/dev/null"), tries=1)
    asyncio.run(_reserve_and_vanish(cfg))
    time.sleep(0.3)

    with caplog.at_level(logging.WARNING, logger="runequeue.worker"):
        work(cfg, concurrency=1)

    recorded = [f.job_id for f in failed_jobs(cfg)]
    results.append(
        Result("R23", "redis", 2, "a failure failed_jobs refuses (a 100-character id) ahead of "
               "a lease-expired job in the outbox", 0, 0, None,
               "the refused one kept and logged at each sweep; the one behind it recorded")
    )  # fmt: skip
    assert recorded == [expired]
    assert f"failed job {too_long} kept in the outbox" in caplog.text
    assert _redis_outbox_size(cfg) == 1


async def _reserve_and_vanish(config: QueueConfig) -> None:
    driver = open_driver(config)
    try:
        batch = await driver.reserve("default", 1, lease_s=0.2, default_tries=1)
        assert len(batch.jobs) == 1
    finally:
        await driver.close()


def _redis_outbox_size(config: QueueConfig) -> int:
    async def size() -> int:
        driver = open_driver(config)
        try:
            return len(await driver.buried("default", 100))
        finally:
            await driver.close()

    return asyncio.run(size())
