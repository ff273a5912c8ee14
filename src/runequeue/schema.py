"""The SQL tables runequeue owns, created by `rune migrate`."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects import mysql

from runequeue.database import create_engine, mapped_errors, redacted
from runequeue.errors import MissingTable

metadata = sa.MetaData()

# SQLite only autoincrements an INTEGER PRIMARY KEY; MySQL's TEXT stops at 64 KiB, and a payload
# may be up to max_payload_bytes (1 MiB by default), so it gets LONGTEXT there.
_Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_LongText = sa.Text().with_variant(mysql.LONGTEXT(), "mysql", "mariadb")

# Job states in the jobs table.
READY, LEASED, DEAD = 0, 1, 2

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
    # Reserve reads (queue, READY, available_at <= now) in (available_at, id) order; recovery
    # reads (LEASED, lease_expires_at < now).
    sa.Index("jobs_ready", "queue", "state", "available_at", "id"),
    sa.Index("jobs_leases", "state", "lease_expires_at"),
)

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
)


def migrate(url: str) -> list[str]:
    """Create runequeue's tables in ``url`` where missing (idempotent); returns those created."""
    with mapped_errors(url):
        engine = create_engine(url)
        try:
            with engine.begin() as conn:
                existing = set(sa.inspect(conn).get_table_names())
                metadata.create_all(conn, checkfirst=True)
        finally:
            engine.dispose()
    return [table.name for table in metadata.sorted_tables if table.name not in existing]


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
    if missing:
        raise MissingTable(
            f"table {', '.join(missing)} does not exist in {redacted(url)}; "
            "run `rune migrate` to create it"
        )
