"""The failed-job store: the ``failed_jobs`` table, on SQLAlchemy Core.

Workers record a failure and only then delete the job from the queue backend (invariant 5), so the
same failure may be recorded twice after a crash between the two: recording is an upsert on the job
id (``uuid``), and a job that fails again after a retry comes back with a fresh ``failed_at``.

A retry holds its row locked (`FailedJobStore.claim`) while it puts the job back, and deletes the
row in the same transaction, so two retries of one row push it once.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import re
from collections.abc import Iterator, Sequence

import sqlalchemy as sa
from sqlalchemy.dialects import mysql, postgresql, sqlite

from runequeue.db_engine import create_engine, mapped_errors
from runequeue.drivers.base import Outgoing
from runequeue.drivers.database import store_jobs
from runequeue.drivers.sql import storable_error, storable_text
from runequeue.failed_job import SHORT_ID_LENGTH, FailedJob, utcnow
from runequeue.schema import failed_jobs

_HEX = re.compile(r"[0-9a-f]+")


class FailedJobStore:
    """The ``failed_jobs`` table of one database. Blocking: call it from a thread in async code."""

    def __init__(self, url: str) -> None:
        self.url = url
        with mapped_errors(url):
            self.engine = create_engine(url)

    def record(self, failure: FailedJob) -> None:
        """Store ``failure``; a row with the same job id is replaced (fresh ``failed_at``)."""
        dialect = self.engine.dialect.name
        text = failure.payload.decode("utf-8", errors="backslashreplace")
        values = {
            "connection": failure.connection,
            "queue": failure.queue,
            "payload": storable_text(text, dialect),
            "exception": storable_error(failure.exception, dialect, text),
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

    def search(
        self,
        *,
        queue: str | None = None,
        job: str | None = None,
        text: str | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> tuple[list[FailedJob], int]:
        """A page of failed jobs, newest first, and how many match in all: of ``queue``, of the
        job class named ``job``, with ``text`` in the uuid, payload or exception (any case)."""
        c = failed_jobs.c
        where: list[sa.ColumnElement[bool]] = []
        if queue:
            where.append(c.queue == queue)
        if job:
            where.append(c.payload.like(f'%"job":"{_escape_like(job)}"%', escape="/"))
        if text:
            pattern = f"%{_escape_like(text)}%"
            where.append(sa.or_(*(column.ilike(pattern, escape="/")
                                  for column in (c.uuid, c.payload, c.exception))))  # fmt: skip
        query = sa.select(failed_jobs).where(*where).order_by(c.id.desc())
        count = sa.select(sa.func.count()).select_from(failed_jobs).where(*where)
        with mapped_errors(self.url), self.engine.connect() as conn:
            total = int(conn.execute(count).scalar() or 0)
            rows = conn.execute(query.limit(limit).offset(offset))
            return [_from_row(row) for row in rows], total

    def counts_by_queue(self) -> dict[str, int]:
        c = failed_jobs.c
        query = sa.select(c.queue, sa.func.count()).group_by(c.queue)
        with mapped_errors(self.url), self.engine.connect() as conn:
            return {str(queue): int(n) for queue, n in conn.execute(query)}

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

    def row_ids_of(self, job_ref: str, limit: int = 5) -> list[int]:
        """Rows whose uuid is ``job_ref``, or else starts with it (a hex prefix of 8 or more).

        Up to ``limit`` ids, so a caller can name the rows an ambiguous prefix matches.
        """
        exact = sa.select(failed_jobs.c.id).where(failed_jobs.c.uuid == job_ref)
        prefix = job_ref.replace("-", "").lower()  # a uuid pasted in its dashed form
        with mapped_errors(self.url), self.engine.connect() as conn:
            found = list(conn.execute(exact).scalars())
            if found or len(prefix) < SHORT_ID_LENGTH or not _HEX.fullmatch(prefix):
                return found
            # Hex digits only, so the pattern holds no LIKE wildcards.
            starts = failed_jobs.c.uuid.like(f"{prefix}%")
            query = sa.select(failed_jobs.c.id).where(starts).order_by(failed_jobs.c.id)
            return list(conn.execute(query.limit(limit)).scalars())

    @contextlib.contextmanager
    def claim(self, row_id: int) -> Iterator[Claimed | None]:
        """Hold row ``row_id`` locked for the ``with`` block, in one transaction.

        The block decides what becomes of the row (`Claimed.delete`, `Claimed.move_to_jobs`,
        `Claimed.record_again`; nothing: it stays). Two concurrent claims of one row cannot both
        push it: the second waits for the lock and then finds no row (``None``). If the block
        raises, the transaction is rolled back and the row stays as it was.
        """
        query = sa.select(failed_jobs).where(failed_jobs.c.id == row_id).with_for_update()
        with mapped_errors(self.url), self.engine.begin() as conn:
            row = conn.execute(query).first()
            yield None if row is None else Claimed(_from_row(row), conn)

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


class Claimed:
    """A failed job whose row `FailedJobStore.claim` holds locked, in the claim's transaction."""

    def __init__(self, job: FailedJob, conn: sa.Connection) -> None:
        self.job = job
        self._conn = conn

    def delete(self) -> None:
        """Delete the row when the claim commits (the job was pushed elsewhere)."""
        self._conn.execute(sa.delete(failed_jobs).where(failed_jobs.c.id == self.job.id))

    def move_to_jobs(self, item: Outgoing) -> bool:
        """Insert ``item`` into the ``jobs`` table of this same database and delete the row: both
        commit, or neither. ``False`` (nothing changed) if the job id is still in ``jobs``.

        One transaction on one connection: on SQLite a second connection would wait for this
        one's write lock ("database is locked"), and a crash between two transactions could
        lose the job or queue it twice.
        """
        if not store_jobs(self._conn, [item]):
            return False  # a worker has not finished with it yet: its row is there, and stays
        self.delete()
        return True

    def record_again(self, exception: str) -> None:
        """The job failed again: keep the row, with the new exception and a fresh ``failed_at``."""
        self._conn.execute(
            sa.update(failed_jobs)
            .where(failed_jobs.c.id == self.job.id)
            .values(
                exception=storable_error(exception, self._conn.dialect.name),
                failed_at=_naive_utc(utcnow()),
            )
        )


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


def _escape_like(text: str) -> str:
    """``text`` for a LIKE pattern with ``/`` as its escape character (not a backslash, which
    MySQL string literals treat specially)."""
    return text.replace("/", "//").replace("%", "/%").replace("_", "/_")


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
