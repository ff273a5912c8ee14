"""The SQL tables runequeue owns, created (and upgraded) by `rune migrate`."""

from __future__ import annotations

import dataclasses
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import mysql

from runequeue.db_engine import create_engine, mapped_errors, redacted
from runequeue.errors import MissingTable

metadata = sa.MetaData()

# SQLite only autoincrements an INTEGER PRIMARY KEY; MySQL's TEXT stops at 64 KiB, and a payload
# may be up to max_payload_bytes (1 MiB by default), so it gets LONGTEXT there.
# Ids are never reused: a stale id given to `rune queue:retry` or `queue:forget` must not hit
# another job. PostgreSQL sequences and InnoDB's counter (persisted since MySQL 8 and MariaDB
# 10.2.4) never go back; SQLite reuses the highest deleted id unless the table says AUTOINCREMENT.
_Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_LongText = sa.Text().with_variant(mysql.LONGTEXT(), "mysql", "mariadb")

# Job states in the jobs table. RECOVERED: ready, but its last worker died running it, so it
# goes only to a worker running nothing else (`Driver.reserve`).
READY, LEASED, DEAD, RECOVERED = 0, 1, 2, 3

PARTIAL_INDEX_DIALECTS = ("postgresql", "sqlite")
# The state column, named before its table exists: the partial indexes' predicates use it.
jobs_state = sa.column("state", sa.SmallInteger())


def _one_state(state: int) -> dict[str, Any]:
    """The options of an index that holds only the rows in ``state``, where partial indexes
    exist (elsewhere it holds every row)."""
    return {f"{dialect}_where": jobs_state == state for dialect in PARTIAL_INDEX_DIALECTS}


# The database driver's queue. Times are epoch milliseconds, read from the database's clock
# (PostgreSQL and MySQL) or this host's (SQLite: one host by definition).
jobs = sa.Table(
    "jobs",
    metadata,
    sa.Column("id", _Id, primary_key=True, autoincrement=True),
    sa.Column("uuid", sa.String(64), nullable=False, unique=True),
    sa.Column("queue", sa.String(255), nullable=False),
    sa.Column("payload", _LongText, nullable=False),
    # Recorded at dispatch so reserve can refuse an oversized payload without reading it
    # (SQLite's length() would load the whole value into the worker's memory).
    sa.Column("payload_bytes", sa.Integer(), nullable=False, default=0),
    sa.Column("state", sa.SmallInteger(), nullable=False, default=READY),
    sa.Column("attempts", sa.Integer(), nullable=False, default=0),
    sa.Column("max_tries", sa.Integer(), nullable=True),  # NULL: the worker's --tries
    sa.Column("available_at", sa.BigInteger(), nullable=False),
    sa.Column("reserved_at", sa.BigInteger(), nullable=True),
    sa.Column("lease_token", sa.String(32), nullable=True),
    sa.Column("lease_expires_at", sa.BigInteger(), nullable=True),
    sa.Column("failed_at", sa.BigInteger(), nullable=True),  # DEAD: waiting for failed_jobs
    sa.Column("error", _LongText, nullable=True),
    sa.Column("created_at", sa.BigInteger(), nullable=False),
    # Reserve reads (queue, READY, available_at <= now) in (available_at, id) order, and RECOVERED
    # apart; recovery reads (LEASED, lease_expires_at < now); the failed outbox reads (queue,
    # DEAD). Where the database has partial indexes (PostgreSQL, SQLite), each index holds the
    # rows of one state, so a dispatch writes one of them and a reserve one: 27 % more bulk
    # dispatches a second on PostgreSQL than with every row in both (docs/drivers.md). Every
    # query names one state (`sql.in_state`): SQLite proves ``state = 0`` implies an index's
    # predicate only when the two are the same term.
    sa.Index("jobs_ready", "queue", "state", "available_at", "id", **_one_state(READY)),
    sa.Index("jobs_leases", "state", "lease_expires_at", **_one_state(LEASED)),
    sqlite_autoincrement=True,
)
# MySQL has no partial index: its jobs_ready holds every state and serves these queries too.
for _name, _state in (("jobs_recovered", RECOVERED), ("jobs_dead", DEAD)):
    sa.Index(
        _name, jobs.c.queue, jobs.c.state, jobs.c.available_at, jobs.c.id, **_one_state(_state)
    ).ddl_if(dialect=PARTIAL_INDEX_DIALECTS)  # type: ignore[arg-type]

failed_jobs = sa.Table(
    "failed_jobs",
    metadata,
    sa.Column("id", _Id, primary_key=True, autoincrement=True),
    sa.Column("uuid", sa.String(64), nullable=False, unique=True),
    sa.Column("connection", sa.String(64), nullable=False),
    sa.Column("queue", sa.String(255), nullable=False),
    sa.Column("payload", _LongText, nullable=False),
    sa.Column("exception", _LongText, nullable=False),
    sa.Column("failed_at", sa.DateTime(), nullable=False, index=True),  # UTC
    sqlite_autoincrement=True,
)


# Unique jobs' locks (`Job.unique_for`) on the database driver: one row per held lock, taken in
# the transaction that stores the job; a lock past ``expires_at`` is free (its worker died).
job_locks = sa.Table(
    "job_locks",
    metadata,
    sa.Column("queue", sa.String(255), primary_key=True),
    sa.Column("lock_key", sa.String(191), primary_key=True),
    sa.Column("job_id", sa.String(64), nullable=False),
    sa.Column("expires_at", sa.BigInteger(), nullable=False),
)


# Job middleware's counters (`RateLimited`, `ThrottlesExceptions`) on the database driver: one row
# per key, a fixed window that ends at ``resets_at`` (epoch ms). Its locks (`WithoutOverlapping`)
# are rows of job_locks under the queue name "" (no queue has it).
job_limits = sa.Table(
    "job_limits",
    metadata,
    sa.Column("limit_key", sa.String(191), primary_key=True),
    sa.Column("hits", sa.Integer(), nullable=False),
    sa.Column("resets_at", sa.BigInteger(), nullable=False),
)

# Shared control values on the database driver (`Driver.control`): the live workers' records,
# paused queues, the restart signal. ``expires_at`` (epoch ms) NULL: never.
job_control = sa.Table(
    "job_control",
    metadata,
    sa.Column("namespace", sa.String(64), primary_key=True),
    sa.Column("name", sa.String(191), primary_key=True),
    sa.Column("value", sa.Text(), nullable=False),
    sa.Column("expires_at", sa.BigInteger(), nullable=True),
)

# Batches (`Bus.batch`) on the database driver, after Laravel's table of the same name: one row per
# batch, locked and updated in the transaction that acknowledges or fails each of its jobs.
# Times are epoch milliseconds; ``callbacks`` holds the then/catch/finally jobs not stored yet.
job_batches = sa.Table(
    "job_batches",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("name", sa.String(255), nullable=False),
    sa.Column("queue", sa.String(255), nullable=False),
    sa.Column("total_jobs", sa.Integer(), nullable=False),
    sa.Column("pending_jobs", sa.Integer(), nullable=False),
    sa.Column("failed_jobs", sa.Integer(), nullable=False),
    sa.Column("failed_job_ids", _LongText, nullable=False),  # a JSON list
    sa.Column("allow_failures", sa.Boolean(), nullable=False),
    sa.Column("callbacks", _LongText, nullable=False),
    sa.Column("created_at", sa.BigInteger(), nullable=False, index=True),
    sa.Column("finished_at", sa.BigInteger(), nullable=True),
    sa.Column("cancelled_at", sa.BigInteger(), nullable=True),
)


@dataclasses.dataclass(frozen=True, slots=True)
class Migration:
    """What `run_migrations` did: tables created, and old SQLite tables rebuilt."""

    created: list[str]
    upgraded: list[str]

    def describe(self, where: str) -> str:
        """One line for ``rune migrate``, naming the database as ``where``."""
        done = []
        if self.created:
            done.append(f"created {', '.join(self.created)}")
        if self.upgraded:
            done.append(
                f"upgraded {', '.join(self.upgraded)} (ids are never reused now; rows and ids kept)"
            )
        if not done:
            return f"nothing to do: every table exists in {where}"
        return f"{'; '.join(done)} in {where}"


def migrate(url: str) -> list[str]:
    """Create runequeue's tables in ``url`` where missing (idempotent); returns those created.

    Old SQLite tables are upgraded too; `run_migrations` also says which.
    """
    return run_migrations(url).created


def run_migrations(url: str) -> Migration:
    """Create runequeue's tables in ``url`` where missing and upgrade old ones, in one transaction.

    Idempotent. The upgrade: SQLite tables made before ids became AUTOINCREMENT are rebuilt.
    """
    with mapped_errors(url):
        engine = create_engine(url, create=True)  # the one command that may create an SQLite file
        try:
            with engine.begin() as conn:
                existing = set(sa.inspect(conn).get_table_names())
                upgraded = [
                    table.name for table in metadata.sorted_tables if _rebuild_if_old(conn, table)
                ]
                metadata.create_all(conn, checkfirst=True)
                if jobs.name in existing and _partial_indexes(conn) and jobs.name not in upgraded:
                    upgraded.append(jobs.name)
        finally:
            engine.dispose()
    created = [table.name for table in metadata.sorted_tables if table.name not in existing]
    return Migration(created, upgraded)


def _rebuild_if_old(conn: sa.Connection, table: sa.Table) -> bool:
    """Rebuild an SQLite ``table`` created without AUTOINCREMENT, keeping its rows and ids.

    SQLite cannot ALTER a table into AUTOINCREMENT: the old table is renamed, its indexes dropped
    (their names are the new table's), the new one created and filled, and the old one dropped.
    The caller's transaction makes it all or nothing.
    """
    if conn.dialect.name != "sqlite" or not table.kwargs.get("sqlite_autoincrement"):
        return False
    ddl = conn.execute(
        sa.text("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = :name"),
        {"name": table.name},
    ).scalar()
    if ddl is None or "AUTOINCREMENT" in str(ddl).upper():
        return False
    old = f"_runequeue_old_{table.name}"
    conn.exec_driver_sql(f'ALTER TABLE "{table.name}" RENAME TO "{old}"')
    for index in conn.exec_driver_sql(f'PRAGMA index_list("{old}")').all():
        if index.origin == "c":  # made by CREATE INDEX; the UNIQUE ones go with the table
            conn.exec_driver_sql(f'DROP INDEX "{index.name}"')
    old_columns = {row.name for row in conn.exec_driver_sql(f'PRAGMA table_info("{old}")')}
    table.create(conn)
    shared = ", ".join(f'"{c.name}"' for c in table.columns if c.name in old_columns)
    conn.exec_driver_sql(f'INSERT INTO "{table.name}" ({shared}) SELECT {shared} FROM "{old}"')
    conn.exec_driver_sql(f'DROP TABLE "{old}"')
    return True


def _partial_indexes(conn: sa.Connection) -> bool:
    """Give an existing ``jobs`` table the partial indexes of `jobs` (PostgreSQL, SQLite);
    True if it had full ones (as made before partial indexes) or lacked one.

    An index is dropped and made again in the caller's transaction: writes to ``jobs`` wait for
    the build, a moment for a queue of thousands of jobs.
    """
    dialect = conn.dialect.name
    if dialect not in PARTIAL_INDEX_DIALECTS:
        return False
    if dialect == "postgresql":
        found = conn.execute(sa.text(
            "SELECT indexname, indexdef FROM pg_indexes "
            "WHERE tablename = :table AND schemaname = current_schema()"
        ), {"table": jobs.name}).all()  # fmt: skip
    else:
        found = conn.execute(sa.text(
            "SELECT name, sql FROM sqlite_master WHERE type = 'index' AND tbl_name = :table"
        ), {"table": jobs.name}).all()  # fmt: skip
    definitions = {name: str(ddl or "") for name, ddl in found}
    changed = False
    for index in sorted(jobs.indexes, key=lambda index: str(index.name)):
        ddl = definitions.get(str(index.name))
        if ddl is not None and " WHERE " in ddl.upper():
            continue
        if ddl is not None:
            index.drop(conn)
        index.create(conn)
        changed = True
    return changed


def check_tables(url: str, names: list[str]) -> None:
    """Raise `MissingTable` (saying to run ``rune migrate``) unless every table exists."""
    with mapped_errors(url):
        engine = create_engine(url)
        try:
            with engine.connect() as conn:
                existing = set(sa.inspect(conn).get_table_names())
        finally:
            engine.dispose()
    missing = [name for name in names if name not in existing]
    if len(missing) == 1:
        raise MissingTable(
            f"table {missing[0]} does not exist in {redacted(url)}; run `rune migrate` to create it"
        )
    if missing:
        raise MissingTable(
            f"tables {', '.join(missing[:-1])} and {missing[-1]} do not exist in {redacted(url)}; "
            "run `rune migrate` to create them"
        )
