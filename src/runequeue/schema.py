"""The SQL tables runequeue owns, created by `rune migrate`."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects import mysql

from runequeue.database import create_engine, mapped_errors

metadata = sa.MetaData()

# SQLite only autoincrements an INTEGER PRIMARY KEY; MySQL's TEXT stops at 64 KiB, and a payload
# may be up to max_payload_bytes (1 MiB by default), so it gets LONGTEXT there.
_Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_LongText = sa.Text().with_variant(mysql.LONGTEXT(), "mysql", "mariadb")

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
