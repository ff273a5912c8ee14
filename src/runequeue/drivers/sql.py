"""The database driver's statements, in one place, with the dialect differences in small functions.

Times are epoch milliseconds from the database's own clock on PostgreSQL and MySQL, so workers on
machines with skewed clocks agree on leases and delays; SQLite lives on one host, whose clock it is.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Iterator, Sequence
from typing import Any

import msgspec
import sqlalchemy as sa
from sqlalchemy.dialects import mysql, postgresql, sqlite

from runequeue.drivers.base import Outgoing
from runequeue.failure_reasons import HOOK_CLAIMED, lease_expired_text, too_large_text
from runequeue.schema import DEAD, LEASED, READY, RECOVERED, job_locks, jobs

LEASE_EXPIRED = lease_expired_text()

# The last line of an error whose NUL bytes were escaped (the summary, its first line, stays).
NUL_NOTE = "[runequeue: NUL bytes are written \\x00 in this row; PostgreSQL text cannot hold them]"


def storable_text(text: str, dialect: str) -> str:
    """``text`` as a text column of ``dialect`` can hold it, so a failure is never refused for
    its text: a lone surrogate is written ``\\udcff`` (no database encodes one), and on
    PostgreSQL a NUL ``\\x00``, as bytes that are not UTF-8 already are in a payload."""
    text = text.encode(errors="backslashreplace").decode()
    return text.replace("\x00", "\\x00") if dialect == "postgresql" else text


def storable_error(error: str, dialect: str, *beside: str) -> str:
    """``error`` as `storable_text`; a last line says so if NULs of it, or of the texts stored
    ``beside`` it, were escaped."""
    stored = storable_text(error, dialect)
    escaped = dialect == "postgresql" and any("\x00" in text for text in (error, *beside))
    return f"{stored}\n{NUL_NOTE}" if escaped and not stored.endswith(NUL_NOTE) else stored


def now_ms(dialect: str) -> sa.ColumnElement[int]:
    """The current time in epoch milliseconds, as the database sees it."""
    if dialect == "postgresql":
        epoch = sa.func.extract("epoch", sa.func.clock_timestamp())
        return sa.cast(sa.func.floor(epoch * 1000), sa.BigInteger)
    if dialect in ("mysql", "mariadb"):
        return sa.cast(sa.func.unix_timestamp(sa.func.now(3)) * 1000, sa.BigInteger)
    return sa.literal(time.time_ns() // 1_000_000, sa.BigInteger)


def statement_now_ms(dialect: str) -> sa.ColumnElement[int]:
    """`now_ms` read once for the whole statement: PostgreSQL's ``statement_timestamp()``
    (``clock_timestamp()`` is read again at each call), MySQL's ``NOW(3)`` (fixed per
    statement already), this host's clock on SQLite."""
    if dialect == "postgresql":
        epoch = sa.func.extract("epoch", sa.func.statement_timestamp())
        return sa.cast(sa.func.floor(epoch * 1000), sa.BigInteger)
    return now_ms(dialect)


def in_state(state: int) -> sa.ColumnElement[bool]:
    """Rows in ``state``, written into the SQL as a number, not bound: a partial index
    (`runequeue.schema.jobs`) serves a query only where the planner sees the state itself, and
    SQLite's, or PostgreSQL's plan for a prepared statement, sees no parameter's value. One state
    a term: SQLite proves a query fits a partial index only from the index's own term."""
    return jobs.c.state == sa.literal_column(str(int(state)), sa.SmallInteger())


def in_any_state(*states: int) -> sa.ColumnElement[bool]:
    return sa.or_(*(in_state(state) for state in states))


NOTIFY_CHANNEL = "runequeue_jobs"  # what idle PostgreSQL workers LISTEN on

# Rows per INSERT on PostgreSQL: they travel as one JSON document, so this bounds its size
# (about a megabyte for small payloads) rather than a count of parameters.
PG_ROWS_PER_INSERT = 5_000


def insert_jobs(dialect: str) -> sa.Executable:
    """An INSERT for `job_rows`, run as executemany, on SQLite and MySQL (PostgreSQL has
    `insert_jobs_from_json`); a job id already stored is skipped, and the row count is the
    number stored.

    Executemany, not one multi-row VALUES: a bulk dispatch of 20,000 jobs would pass the
    databases' limits on bind parameters in one statement.
    """
    now = now_ms(dialect)
    values = {
        "available_at": now + sa.bindparam("delay_ms", type_=sa.BigInteger),
        "created_at": now,
    }
    if dialect == "sqlite":
        lite = sqlite.insert(jobs).values(values)
        return lite.on_conflict_do_nothing(index_elements=["uuid"])
    return mysql.insert(jobs).values(values).prefix_with("IGNORE")


def job_rows(items: Sequence[Outgoing]) -> list[dict[str, Any]]:
    return [
        {
            "uuid": item.job_id,
            "queue": item.queue,
            "payload": item.raw.decode("utf-8", errors="backslashreplace"),
            "payload_bytes": len(item.raw),
            "state": READY,
            "attempts": 0,
            "max_tries": item.max_tries,
            "delay_ms": int(item.delay_s * 1000),
        }
        for item in items
    ]


@functools.cache
def insert_jobs_from_json() -> sa.Select[Any]:
    """PostgreSQL's INSERT for one document of `job_documents`: the server unpacks the rows
    (``json_to_recordset``) and inserts them in dispatch order, skipping a job id already stored,
    and returns the ids it stored. Built once: compiling it costs more than a single dispatch.

    Not executemany: SQLAlchemy reports no row count for it on PostgreSQL, and its RETURNING
    form builds multi-row VALUES statements that psycopg parses at about 3 µs a parameter, which
    made a bulk dispatch three times slower. Nor arrays: psycopg escapes every element of a text
    array in Python. One JSON text is encoded by msgspec in C.
    """
    now = now_ms("postgresql")
    document = sa.bindparam("rows", type_=sa.Text())
    given = (
        sa.func.json_to_recordset(sa.cast(document, postgresql.JSON()))
        .table_valued(
            sa.column("uuid", sa.Text()),
            sa.column("queue", sa.Text()),
            sa.column("payload", sa.Text()),
            sa.column("payload_bytes", sa.Integer()),
            sa.column("max_tries", sa.Integer()),
            sa.column("delay_ms", sa.BigInteger()),
            sa.column("position", sa.Integer()),
        )
        .render_derived(name="given", with_types=True)
    )
    chosen = sa.select(
        given.c.uuid,
        given.c.queue,
        given.c.payload,
        given.c.payload_bytes,
        sa.literal(READY, sa.SmallInteger()),
        sa.literal(0, sa.Integer()),
        given.c.max_tries,
        now + given.c.delay_ms,
        now,
    ).order_by(given.c.position)  # ids in dispatch order: the queue's order
    columns = ["uuid", "queue", "payload", "payload_bytes", "state", "attempts", "max_tries"]
    insert = postgresql.insert(jobs).from_select([*columns, "available_at", "created_at"], chosen)
    stored = insert.on_conflict_do_nothing(index_elements=["uuid"]).returning(jobs.c.id)
    # The NOTIFY that wakes idle workers rides in the same statement (once, and only if a row
    # was stored): a dispatch is one round trip, in the caller's transaction too. PostgreSQL
    # delivers it at commit, when the jobs are visible.
    new = stored.cte("stored")
    woke = (
        sa.select(sa.func.pg_notify(NOTIFY_CHANNEL, "").label("woke"))
        .where(sa.exists(sa.select(new.c.id)))
        .subquery("woke")
    )
    return sa.select(new.c.id).select_from(new.outerjoin(woke, sa.true()))


def job_documents(items: Sequence[Outgoing]) -> Iterator[dict[str, str]]:
    """The parameters of `insert_jobs_from_json` for ``items``: `PG_ROWS_PER_INSERT` rows each."""
    for first in range(0, len(items), PG_ROWS_PER_INSERT):
        rows = job_rows(items[first : first + PG_ROWS_PER_INSERT])
        for position, row in enumerate(rows):
            row["position"] = position
        yield {"rows": msgspec.json.encode(rows).decode()}


def select_ready(dialect: str, queue: str, count: int, state: int = READY) -> sa.Select[Any]:
    """The next ``count`` jobs in ``state`` (READY, or RECOVERED), locked; rows other workers hold
    are skipped, not waited for.

    SQLite has no row locks: the driver's ``BEGIN IMMEDIATE`` makes the whole reserve exclusive.
    """
    return (
        sa.select(
            jobs.c.id,
            stored_bytes(dialect, jobs.c.uuid).label("uuid"),
            stored_kind(dialect, jobs.c.uuid).label("uuid_kind"),
            # Cast: SQLite keeps whatever is written into an INTEGER column ('x', 2.5).
            sa.cast(jobs.c.payload_bytes, sa.Integer).label("size"),
            sa.cast(jobs.c.attempts, sa.Integer).label("attempts"),
        )
        .where(jobs.c.queue == queue, in_state(state), jobs.c.available_at <= now_ms(dialect))
        .order_by(jobs.c.available_at, jobs.c.id)
        .limit(count)
        .with_for_update(skip_locked=True)
    )


def stored_bytes(dialect: str, column: sa.ColumnElement[Any]) -> sa.ColumnElement[Any]:
    """``column``'s value as the bytes stored, whatever was written there (NULL stays NULL).

    Never read as text: SQLite keeps text that is not UTF-8 (or a BLOB, or a number) in any
    column, and reading one such value as text fails the whole SELECT, so the rows behind it
    would never run. PostgreSQL's CAST to bytea would parse backslashes, hence convert_to.
    """
    if dialect == "postgresql":
        return sa.func.convert_to(column, "UTF8", type_=sa.LargeBinary)
    return sa.cast(column, sa.LargeBinary)


def stored_kind(dialect: str, column: sa.ColumnElement[Any]) -> sa.ColumnElement[str]:
    """What ``column`` holds: ``text``, or (only SQLite allows it) ``blob``, ``integer``,
    ``real``, ``null``."""
    if dialect == "sqlite":
        return sa.func.typeof(column, type_=sa.String)
    return sa.case((column.is_(None), "null"), else_="text")


def payloads(dialect: str, ids: Sequence[int]) -> sa.Select[Any]:
    return sa.select(
        jobs.c.id,
        stored_bytes(dialect, jobs.c.payload).label("payload"),
        stored_kind(dialect, jobs.c.payload).label("kind"),
    ).where(jobs.c.id.in_(ids))


def quarantine(dialect: str, row_id: int, error: str, *, uuid: str | None) -> sa.Executable:
    """Fail a row whose stored values no worker can take, saying why; ``uuid`` replaces a job
    id that is not text, so the row can still be recorded in failed_jobs and purged."""
    values: dict[str, Any] = {
        "state": DEAD,
        "attempts": jobs.c.attempts + 1,
        "failed_at": now_ms(dialect),
        "error": f"runequeue.errors.InvalidPayload: {error}",
    }
    if uuid is not None:
        values["uuid"] = uuid
    return sa.update(jobs).where(jobs.c.id == row_id).values(values)


def fail_oversized(dialect: str, ids: Sequence[int], limit_bytes: int) -> sa.Executable:
    """Fail jobs too large to hand out, keeping only the head of each payload for forensics.

    SQLite runs inside the worker, and cutting the head would load the whole value there: on
    SQLite the payload is dropped instead, and the error says so.
    """
    kept = "only its first 65536 are kept"
    head: sa.ColumnElement[str] = sa.func.substr(jobs.c.payload, 1, 65536)
    if dialect == "sqlite":
        kept, head = "it was dropped unread", sa.literal("")
    return (
        sa.update(jobs)
        .where(jobs.c.id.in_(ids))
        .values(
            state=DEAD,
            attempts=jobs.c.attempts + 1,
            failed_at=now_ms(dialect),
            payload=head,
            error=too_large_text(None, limit_bytes, kept),
        )
    )


def lease(dialect: str, ids: Sequence[int], token: str, lease_ms: int) -> sa.Executable:
    now = now_ms(dialect)
    return (
        sa.update(jobs)
        .where(jobs.c.id.in_(ids))
        .values(
            state=LEASED,
            attempts=jobs.c.attempts + 1,
            lease_token=token,
            reserved_at=now,
            lease_expires_at=now + lease_ms,
        )
    )


def next_due(dialect: str, queue: str) -> sa.Select[Any]:
    """Milliseconds until the earliest waiting job of ``queue`` is due (NULL: none waits)."""
    earliest = sa.func.min(jobs.c.available_at) - now_ms(dialect)
    return sa.select(earliest).where(jobs.c.queue == queue, in_state(READY))


def expire_leases(
    dialect: str, queue: str, default_tries: int
) -> tuple[sa.Executable, sa.Executable]:
    """Expired leases: dead-letter those with no tries left, then put the others back.

    Run in that order: the second statement's row count is the number of jobs made runnable.
    """
    now = now_ms(dialect)
    expired = sa.and_(jobs.c.queue == queue, in_state(LEASED), jobs.c.lease_expires_at < now)
    exhausted = jobs.c.attempts >= sa.func.coalesce(jobs.c.max_tries, default_tries)
    return (
        sa.update(jobs)
        .where(expired, exhausted)
        .values(state=DEAD, lease_token=None, failed_at=now, error=LEASE_EXPIRED),
        # Apart, to run alone (it may be what killed the worker), oldest first: available_at is
        # left as it was.
        sa.update(jobs)
        .where(expired)
        .values(state=RECOVERED, lease_token=None, lease_expires_at=None),
    )


def recovered_waiting(queue: str) -> sa.Select[Any]:
    """A row if jobs recovered from a dead worker wait on ``queue``."""
    return sa.select(jobs.c.id).where(jobs.c.queue == queue, in_state(RECOVERED)).limit(1)


def held(job_id: str, token: str) -> sa.ColumnElement[bool]:
    """The lease ``token`` still holds job ``job_id``."""
    return sa.and_(jobs.c.uuid == job_id, jobs.c.lease_token == token, in_state(LEASED))


def extend(dialect: str, job_id: str, token: str, lease_ms: int) -> sa.Executable:
    return (
        sa.update(jobs)
        .where(held(job_id, token))
        .values(lease_expires_at=now_ms(dialect) + lease_ms)
    )


def ack(job_id: str, token: str) -> sa.Executable:
    return sa.delete(jobs).where(held(job_id, token))


def leases_of(job_ids: Sequence[str]) -> sa.Select[Any]:
    """The rows of jobs ``job_ids``, with their state and lease token, locked until the
    transaction ends (SQLite's ``BEGIN IMMEDIATE`` locks the database instead). Not on MySQL
    (see `DatabaseQueue.ack`)."""
    return (
        sa.select(jobs.c.id, jobs.c.uuid, jobs.c.state, jobs.c.lease_token)
        .where(jobs.c.uuid.in_(job_ids))
        .with_for_update()
    )


def delete_rows(row_ids: Sequence[int]) -> sa.Executable:
    return sa.delete(jobs).where(jobs.c.id.in_(row_ids))


def release(dialect: str, job_id: str, token: str, delay_ms: int, refund: bool) -> sa.Executable:
    return (
        sa.update(jobs)
        .where(held(job_id, token))
        .values(
            state=READY,
            lease_token=None,
            lease_expires_at=None,
            available_at=now_ms(dialect) + delay_ms,
            attempts=jobs.c.attempts - int(refund),
        )
    )


def bury(dialect: str, job_id: str, token: str, error: str) -> sa.Executable:
    return (
        sa.update(jobs)
        .where(held(job_id, token))
        .values(
            state=DEAD,
            lease_token=None,
            failed_at=now_ms(dialect),
            error=storable_error(error, dialect),
        )
    )


def buried(dialect: str, queue: str, limit: int) -> sa.Select[Any]:
    """The failed outbox of ``queue``; payloads and errors as stored bytes (see `stored_bytes`)."""
    return (
        sa.select(
            stored_bytes(dialect, jobs.c.uuid).label("uuid"),
            stored_bytes(dialect, jobs.c.payload).label("payload"),
            stored_bytes(dialect, jobs.c.error).label("error"),
        )
        .where(jobs.c.queue == queue, in_state(DEAD))
        .order_by(jobs.c.failed_at, jobs.c.id)
        .limit(limit)
    )


def claim_failed_hook(queue: str, job_id: str) -> sa.Executable:
    """One caller's update changes a row: the one that runs the buried job's ``failed()`` hook."""
    return (
        sa.update(jobs)
        .where(
            jobs.c.uuid == job_id,
            jobs.c.queue == queue,
            in_state(DEAD),
            jobs.c.lease_token.is_(None),
        )
        .values(lease_token=HOOK_CLAIMED)
    )


def purge(job_id: str) -> sa.Executable:
    return sa.delete(jobs).where(jobs.c.uuid == job_id, in_state(DEAD))


def size(queue: str) -> sa.Select[Any]:
    """The jobs of ``queue`` not yet done, counted a state at a time, each from the partial
    index that holds it."""

    def count(state: int) -> sa.ScalarSelect[int]:
        where = (jobs.c.queue == queue, in_state(state))
        return sa.select(sa.func.count()).select_from(jobs).where(*where).scalar_subquery()

    return sa.select(count(READY) + count(RECOVERED) + count(LEASED))


def counts(dialect: str, queue: str) -> sa.Executable:
    """One row: a queue's (ready, delayed, reserved) jobs. Each is a count over a range of an
    index (a state at a time), against a time read once (not per row: ``clock_timestamp()`` is
    volatile), so a queue of a million jobs is counted from its indexes alone."""
    now = statement_now_ms(dialect)

    def count(state: int, *where: sa.ColumnElement[bool]) -> sa.ScalarSelect[int]:
        where = (jobs.c.queue == queue, in_state(state), *where)
        return sa.select(sa.func.count()).select_from(jobs).where(*where).scalar_subquery()

    def waiting(*where: sa.ColumnElement[bool]) -> sa.ColumnElement[int]:
        return count(READY, *where) + count(RECOVERED, *where)

    return sa.select(
        waiting(jobs.c.available_at <= now), waiting(jobs.c.available_at > now), count(LEASED)
    )


def clear(queue: str) -> sa.Executable:
    return sa.delete(jobs).where(jobs.c.queue == queue, in_any_state(READY, LEASED, RECOVERED))


# Unique jobs' locks (`schema.job_locks`).


def take_expired_lock(
    dialect: str, queue: str, lock_key: str, job_id: str, ttl_ms: int
) -> sa.Executable:
    """Take over the lock of (``queue``, ``lock_key``) if it has expired (its worker died)."""
    now = now_ms(dialect)
    return (
        sa.update(job_locks)
        .where(
            job_locks.c.queue == queue,
            job_locks.c.lock_key == lock_key,
            job_locks.c.expires_at <= now,
        )
        .values(job_id=job_id, expires_at=now + ttl_ms)
    )


def take_lock(dialect: str, queue: str, lock_key: str, job_id: str, ttl_ms: int) -> sa.Executable:
    """Insert the lock unless it is held. Two callers racing for it meet on the primary key: one
    inserts, the other waits for its transaction and skips."""
    values = {
        "queue": queue, "lock_key": lock_key, "job_id": job_id,
        "expires_at": now_ms(dialect) + ttl_ms,
    }  # fmt: skip
    return insert_if_absent(dialect, job_locks, values)


def insert_if_absent(dialect: str, table: sa.Table, values: dict[str, Any]) -> sa.Executable:
    """INSERT ``values`` into ``table`` unless a row with the same primary key is there."""
    if dialect == "sqlite":
        return sqlite.insert(table).values(values).on_conflict_do_nothing()
    if dialect == "postgresql":
        return postgresql.insert(table).values(values).on_conflict_do_nothing()
    return mysql.insert(table).values(values).prefix_with("IGNORE")


def lock_holder(dialect: str, queue: str, lock_key: str) -> sa.Select[Any]:
    """Who holds the lock (``job_id``), and whether it has ``expired``."""
    expired = (job_locks.c.expires_at <= now_ms(dialect)).label("expired")
    return sa.select(job_locks.c.job_id, expired).where(
        job_locks.c.queue == queue, job_locks.c.lock_key == lock_key
    )


def free_lock(queue: str, lock_key: str, job_id: str) -> sa.Executable:
    """Delete the lock if ``job_id`` still holds it."""
    return sa.delete(job_locks).where(
        job_locks.c.queue == queue,
        job_locks.c.lock_key == lock_key,
        job_locks.c.job_id == job_id,
    )


def deadlock(exc: sa.exc.DBAPIError) -> bool:
    """MySQL's 1213 (deadlock, rolled back) or PostgreSQL's 40P01: the transaction may be tried
    again."""
    code = getattr(exc.orig, "sqlstate", None) or (getattr(exc.orig, "args", None) or [None])[0]
    return code in (1213, "40P01")
