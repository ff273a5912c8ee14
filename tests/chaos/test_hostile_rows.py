"""Values runequeue never writes, written straight into its tables (issue 11, items 1 and 2).

R22: rows of the database driver's ``jobs`` table holding what a column can hold but no job is (a
BLOB, text that is not UTF-8, a number, an id that is not text). Each ends in failed_jobs with the
reason; the valid jobs behind them run; the worker never dies.

R23: failures PostgreSQL's ``text`` cannot store as they are (a NUL byte in the payload or in the
exception). They are recorded with the NUL escaped, and one failure that cannot be recorded does
not hold back the others.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import sqlalchemy as sa

from runequeue import Queue, QueueConfig
from runequeue.database import create_engine
from tests.chaos.report import Result
from tests.support.jobs import Record, read_events
from tests.workers import failed_jobs, work

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
