"""The failed-job store: the ``failed_jobs`` table, on SQLAlchemy Core.

Workers record a failure and only then delete the job from the queue backend (invariant 5), so the
same failure may be recorded twice after a crash between the two: recording is an upsert on the job
id (``uuid``), and a job that fails again after a retry comes back with a fresh ``failed_at``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
from collections.abc import Iterator, Sequence

import sqlalchemy as sa
from sqlalchemy.dialects import mysql, postgresql, sqlite

from runequeue import payload
from runequeue.database import create_engine, mapped_errors
from runequeue.schema import failed_jobs


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@dataclasses.dataclass(frozen=True, slots=True)
class FailedJob:
    """One failed job: the exact stored payload and why it failed."""

    job_id: str
    connection: str
    queue: str
    payload: bytes
    exception: str
    failed_at: dt.datetime = dataclasses.field(default_factory=utcnow)
    id: int = 0  # the row's key, once stored

    @property
    def job_name(self) -> str:
        return payload.peek_name(self.payload) or "?"

    @property
    def summary(self) -> str:
        """The first line of the exception."""
        return self.exception.splitlines()[0] if self.exception else ""


class FailedJobStore:
    """The ``failed_jobs`` table of one database. Blocking: call it from a thread in async code."""

    def __init__(self, url: str) -> None:
        self.url = url
        with mapped_errors(url):
            self.engine = create_engine(url)

    def record(self, failure: FailedJob) -> None:
        """Store ``failure``; a row with the same job id is replaced (fresh ``failed_at``)."""
        values = {
            "connection": failure.connection,
            "queue": failure.queue,
            "payload": failure.payload.decode("utf-8", errors="backslashreplace"),
            "exception": failure.exception,
            "failed_at": _naive_utc(failure.failed_at),
        }
        with mapped_errors(self.url), self.engine.begin() as conn:
            conn.execute(_upsert(self.engine.dialect.name, {"uuid": failure.job_id, **values}))

    def all(self, queue: str | None = None) -> list[FailedJob]:
        """Every failed job (of ``queue``), oldest first."""
        query = sa.select(failed_jobs).order_by(failed_jobs.c.id)
        if queue is not None:
            query = query.where(failed_jobs.c.queue == queue)
        with mapped_errors(self.url), self.engine.connect() as conn:
            return [_from_row(row) for row in conn.execute(query)]

    def find(self, ids: Sequence[int]) -> list[FailedJob]:
        query = sa.select(failed_jobs).where(failed_jobs.c.id.in_(ids)).order_by(failed_jobs.c.id)
        with mapped_errors(self.url), self.engine.connect() as conn:
            return [_from_row(row) for row in conn.execute(query)]

    def ids(self, queue: str | None = None) -> list[int]:
        query = sa.select(failed_jobs.c.id).order_by(failed_jobs.c.id)
        if queue is not None:
            query = query.where(failed_jobs.c.queue == queue)
        with mapped_errors(self.url), self.engine.connect() as conn:
            return list(conn.execute(query).scalars())

    @contextlib.contextmanager
    def claim(self, row_id: int) -> Iterator[FailedJob | None]:
        """Hold row ``row_id`` locked for the ``with`` block and delete it if the block succeeds.

        Two concurrent retries of one row cannot both push it: the second waits for the lock and
        then finds no row (``None``). If the block raises, the row stays.
        """
        query = sa.select(failed_jobs).where(failed_jobs.c.id == row_id).with_for_update()
        with mapped_errors(self.url), self.engine.begin() as conn:
            row = conn.execute(query).first()
            yield None if row is None else _from_row(row)
            if row is not None:
                conn.execute(sa.delete(failed_jobs).where(failed_jobs.c.id == row_id))

    def forget(self, row_id: int) -> bool:
        """Delete one failed job; ``False`` if there was none with that id."""
        with mapped_errors(self.url), self.engine.begin() as conn:
            deleted = conn.execute(sa.delete(failed_jobs).where(failed_jobs.c.id == row_id))
            return deleted.rowcount > 0

    def flush(self, older_than: dt.timedelta | None = None) -> int:
        """Delete every failed job, or those that failed more than ``older_than`` ago."""
        statement = sa.delete(failed_jobs)
        if older_than is not None:
            statement = statement.where(failed_jobs.c.failed_at < _naive_utc(utcnow() - older_than))
        with mapped_errors(self.url), self.engine.begin() as conn:
            return int(conn.execute(statement).rowcount)

    def close(self) -> None:
        self.engine.dispose()


def _upsert(dialect: str, values: dict[str, object]) -> sa.Executable:
    """INSERT, or UPDATE the row of the same uuid, in one statement of the dialect's own.

    One statement matters on MySQL: UPDATE-then-INSERT from two workers at once deadlocks on the
    unique index's gap locks.
    """
    changed = {key: value for key, value in values.items() if key != "uuid"}
    if dialect == "postgresql":
        pg = postgresql.insert(failed_jobs).values(values)
        return pg.on_conflict_do_update(index_elements=["uuid"], set_=changed)
    if dialect in ("mysql", "mariadb"):
        return mysql.insert(failed_jobs).values(values).on_duplicate_key_update(changed)
    lite = sqlite.insert(failed_jobs).values(values)
    return lite.on_conflict_do_update(index_elements=["uuid"], set_=changed)


def _naive_utc(moment: dt.datetime) -> dt.datetime:
    # Stored without a zone (SQLite and MySQL have no zone-aware type); always UTC.
    return moment.astimezone(dt.UTC).replace(tzinfo=None)


def _from_row(row: sa.Row[tuple[object, ...]]) -> FailedJob:
    values = row._mapping
    return FailedJob(
        id=int(values["id"]),
        job_id=str(values["uuid"]),
        connection=str(values["connection"]),
        queue=str(values["queue"]),
        payload=str(values["payload"]).encode(),
        exception=str(values["exception"]),
        failed_at=values["failed_at"].replace(tzinfo=dt.UTC),
    )
