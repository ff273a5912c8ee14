"""SQLAlchemy engines from the URLs users already have, and database errors mapped at the boundary.

``postgresql://`` and ``mysql://`` URLs get whichever DBAPI is installed (psycopg 3, psycopg2,
PyMySQL or mysqlclient), so users never have to spell ``+psycopg``. SQLite gets WAL mode, a busy
timeout, and ``BEGIN IMMEDIATE`` for every transaction: a read-then-write transaction started
DEFERRED can fail with SQLITE_BUSY_SNAPSHOT, which no busy timeout retries.
"""

from __future__ import annotations

import contextlib
import importlib.util
import sqlite3
from collections.abc import Iterator
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import URL, make_url

from runequeue.errors import (
    ConfigError,
    DatabaseUnavailable,
    FailedStoreError,
    MissingTable,
    RuneQueueError,
)

# Dialect -> (DBAPI module, SQLAlchemy driver name), in order of preference.
_DBAPIS: dict[str, list[tuple[str, str]]] = {
    "postgresql": [("psycopg", "psycopg"), ("psycopg2", "psycopg2")],
    "mysql": [("pymysql", "pymysql"), ("MySQLdb", "mysqldb")],
    "mariadb": [("pymysql", "pymysql"), ("MySQLdb", "mysqldb")],
}
_EXTRAS = {"postgresql": "postgres", "mysql": "mysql", "mariadb": "mysql"}


def normalized_url(url: str) -> URL:
    """``url`` with an installed DBAPI filled in when it names none."""
    try:
        parsed = make_url(url)
    except sa.exc.ArgumentError as exc:
        raise ConfigError(f"invalid DATABASE_URL {url!r}: {exc}") from exc
    backend = parsed.get_backend_name()
    if "+" in parsed.drivername or backend not in _DBAPIS:
        return parsed
    for module, driver in _DBAPIS[backend]:
        if importlib.util.find_spec(module) is not None:
            return parsed.set(drivername=f"{backend}+{driver}")
    extra = _EXTRAS[backend]
    raise ConfigError(
        f"no {backend} driver is installed; install one with: pip install 'runequeue[{extra}]'"
    )


def create_engine(url: str) -> sa.Engine:
    """An engine for ``url`` (see the module docstring for what it adds)."""
    parsed = normalized_url(url)
    if parsed.get_backend_name() == "sqlite":
        return _sqlite_engine(parsed)
    # A bounded connect: dispatch to a database that is down must fail, not hang the caller.
    return sa.create_engine(
        parsed, pool_pre_ping=True, pool_recycle=1800, connect_args={"connect_timeout": 5}
    )


def _sqlite_engine(url: URL) -> sa.Engine:
    engine = sa.create_engine(url, connect_args={"timeout": 5.0})

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: sqlite3.Connection, _: Any) -> None:
        dbapi_connection.isolation_level = None  # let SQLAlchemy's "begin" event issue BEGIN
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA busy_timeout=5000")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: sa.Connection) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


def redacted(url: str) -> str:
    """``url`` without its password."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except sa.exc.ArgumentError:
        return url


@contextlib.contextmanager
def mapped_errors(
    url: str,
    *,
    unavailable: type[RuneQueueError] = DatabaseUnavailable,
    failed: type[RuneQueueError] = FailedStoreError,
) -> Iterator[None]:
    """SQLAlchemy errors as runequeue's, so callers never import SQLAlchemy's.

    A missing table is `MissingTable` (run ``rune migrate``); a lost or refused connection, a
    lock timeout or a deadlock is ``unavailable`` (worth retrying); anything else is ``failed``.
    """
    try:
        yield
    except sa.exc.DBAPIError as exc:
        where = redacted(url)
        if _is_missing_table(exc):
            raise MissingTable(
                f"a runequeue table is missing in {where}; run `rune migrate` ({exc.orig})"
            ) from exc
        if isinstance(exc, sa.exc.OperationalError | sa.exc.InterfaceError):
            raise unavailable(f"database {where} is unavailable: {exc.orig}") from exc
        raise failed(f"database {where} failed: {exc.orig}") from exc
    except sa.exc.SQLAlchemyError as exc:
        raise failed(f"database {redacted(url)} failed: {exc}") from exc


def _is_missing_table(exc: sa.exc.DBAPIError) -> bool:
    text = str(exc.orig).lower()
    return any(
        marker in text
        for marker in ("no such table", "undefinedtable", "doesn't exist", "does not exist")
    )
