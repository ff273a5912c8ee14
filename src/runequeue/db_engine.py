"""SQLAlchemy engines from the URLs users already have, and database errors mapped at the boundary.

``postgresql://`` (or Heroku's ``postgres://``) and ``mysql://`` URLs get whichever DBAPI is
installed (psycopg 3, psycopg2, PyMySQL or mysqlclient), so users never have to spell
``+psycopg``. SQLite gets WAL mode, a busy timeout, and ``BEGIN IMMEDIATE`` for every
transaction: a read-then-write transaction started DEFERRED can fail with SQLITE_BUSY_SNAPSHOT,
which no busy timeout retries.

Errors are classified by what the driver reports (PostgreSQL's SQLSTATE, MySQL's error number,
SQLite's message), so each problem gets the advice that fixes it: a missing table says to run
``rune migrate``, a missing database or a refused user says to fix ``DATABASE_URL``.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import re
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import URL, make_url

from runequeue.errors import (
    ConfigError,
    DatabaseAccessDenied,
    DatabaseUnavailable,
    FailedStoreError,
    MissingDatabase,
    MissingTable,
    RuneQueueError,
)
from runequeue.text import one_line
from runequeue.urls import hide_password

# Dialect -> (DBAPI module, SQLAlchemy driver name), in order of preference.
_DBAPIS: dict[str, list[tuple[str, str]]] = {
    "postgresql": [("psycopg", "psycopg"), ("psycopg2", "psycopg2")],
    "mysql": [("pymysql", "pymysql"), ("MySQLdb", "mysqldb")],
    "mariadb": [("pymysql", "pymysql"), ("MySQLdb", "mysqldb")],
}
_EXTRAS = {"postgresql": "postgres", "mysql": "mysql", "mariadb": "mysql"}
# Spellings SQLAlchemy refuses but users have in their environment (Heroku, docker-compose).
_ALIASES = {"postgres": "postgresql"}
_DEFAULT_PORTS = {"postgresql": 5432, "mysql": 3306, "mariadb": 3306}


def normalized_url(url: str) -> URL:
    """``url`` with an installed DBAPI filled in when it names none."""
    try:
        parsed = make_url(url)
    except (sa.exc.ArgumentError, ValueError) as exc:
        raise ConfigError(f"invalid DATABASE_URL {hide_password(url)!r}: {exc}") from exc
    backend, _, driver = parsed.drivername.partition("+")
    if backend in _ALIASES:
        backend = _ALIASES[backend]
        parsed = parsed.set(drivername=f"{backend}+{driver}" if driver else backend)
    if driver or backend not in _DBAPIS:
        return parsed
    for module, name in _DBAPIS[backend]:
        if importlib.util.find_spec(module) is not None:
            return parsed.set(drivername=f"{backend}+{name}")
    extra = _EXTRAS[backend]
    raise ConfigError(
        f"no {backend} driver is installed; install one with: pip install 'runequeue[{extra}]'"
    )


def create_engine(url: str, *, create: bool = False) -> sa.Engine:
    """An engine for ``url`` (see the module docstring for what it adds).

    ``create`` lets SQLite create the database file when it does not exist. Only ``rune
    migrate`` needs that: everything else opens the file read-write or not at all, so a command
    run in the wrong directory says there is no database there instead of leaving an empty one.
    """
    parsed = normalized_url(url)
    try:
        if parsed.get_backend_name() == "sqlite":
            return _sqlite_engine(parsed, create=create)
        # A bounded connect: dispatch to a database that is down must fail, not hang the caller.
        return sa.create_engine(
            parsed, pool_pre_ping=True, pool_recycle=1800, connect_args={"connect_timeout": 5}
        )
    except ImportError as exc:  # a DBAPI the URL names explicitly (mysql+mysqldb://) is missing
        raise ConfigError(f"DATABASE_URL {redacted(url)} needs {exc.name or exc}: {exc}") from exc
    except sa.exc.NoSuchModuleError as exc:
        raise ConfigError(
            f"DATABASE_URL {redacted(url)}: unsupported database {parsed.drivername!r}; "
            "use sqlite:///, postgresql:// or mysql://"
        ) from exc


def _sqlite_engine(url: URL, *, create: bool) -> sa.Engine:
    engine = sa.create_engine(url, connect_args={"timeout": 5.0})

    if not create and _sqlite_path(url) is not None:

        @event.listens_for(engine, "do_connect")
        def _open_existing(_: Any, __: Any, cargs: list[Any], cparams: dict[str, Any]) -> None:
            # mode=rw opens the file only if it exists; a plain open would create it, empty.
            cargs[0] = Path(cargs[0]).as_uri() + "?mode=rw"
            cparams["uri"] = True

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


def _sqlite_path(url: URL) -> str | None:
    """The file an SQLite URL names; ``None`` for an in-memory database or a ``file:`` URI."""
    database = url.database or ""
    if database in ("", ":memory:") or url.query.get("uri") or database.startswith("file:"):
        return None
    return database


def sqlite_file(url: str) -> str | None:
    """The file an SQLite ``url`` names; ``None`` for another database, an in-memory one or a
    ``file:`` URI."""
    parsed = normalized_url(url)
    return _sqlite_path(parsed) if parsed.get_backend_name() == "sqlite" else None


def redacted(url: str) -> str:
    """``url`` without its password (before the host or in the query string)."""
    return hide_password(url)


@contextlib.contextmanager
def mapped_errors(
    url: str,
    *,
    unavailable: type[RuneQueueError] = DatabaseUnavailable,
    failed: type[RuneQueueError] = FailedStoreError,
) -> Iterator[None]:
    """SQLAlchemy errors as runequeue's, so callers never import SQLAlchemy's.

    A missing table is `MissingTable` (run ``rune migrate``), a missing database
    `MissingDatabase` and a refused user `DatabaseAccessDenied` (fix ``DATABASE_URL``); a lost or
    refused connection, a lock timeout or a deadlock is ``unavailable`` (worth retrying); anything
    else is ``failed``. Messages are one line, with the URL's password hidden.
    """
    try:
        yield
    except sa.exc.DBAPIError as exc:
        specific = _classified(exc, url)
        if specific is not None:
            raise specific from exc
        where, detail = redacted(url), one_line(exc.orig)
        if isinstance(exc, sa.exc.OperationalError | sa.exc.InterfaceError):
            raise unavailable(f"database {where} is unavailable: {detail}") from exc
        raise failed(f"database {where} failed: {detail}") from exc
    except sa.exc.SQLAlchemyError as exc:
        raise failed(f"database {redacted(url)} failed: {one_line(exc)}") from exc


def _classified(exc: sa.exc.DBAPIError, url: str) -> RuneQueueError | None:
    """The error that names what is wrong with the set-up, or ``None`` for any other error."""
    parsed = normalized_url(url)
    backend = parsed.get_backend_name()
    if backend == "postgresql":
        return _postgresql_error(exc, parsed, url)
    if backend in ("mysql", "mariadb"):
        return _mysql_error(exc, parsed, url)
    if backend == "sqlite":
        return _sqlite_error(exc, parsed, url)
    return None


# PostgreSQL SQLSTATEs (Appendix A of its manual).
_PG_UNDEFINED_TABLE = "42P01"
_PG_INVALID_CATALOG = "3D000"  # no such database
_PG_AUTH = ("28000", "28P01")  # invalid authorization (unknown role, no pg_hba entry), password
# libpq reports a failure during connection start-up with no SQLSTATE (no result carries one):
# the server's FATAL message is all there is. These are its texts in the default locale; in
# another locale the error stays a plain "unavailable" one, which still names the server's text.
_PG_STARTUP_MISSING_DATABASE = re.compile(r'FATAL:\s+database "[^"]*" does not exist')
_PG_STARTUP_AUTH = re.compile(
    r'FATAL:\s+(role "[^"]*" does not exist|password authentication failed|no pg_hba\.conf entry)'
)


def _postgresql_error(exc: sa.exc.DBAPIError, parsed: URL, url: str) -> RuneQueueError | None:
    orig = exc.orig
    sqlstate = getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)  # psycopg, 2
    text = str(orig)
    if sqlstate == _PG_UNDEFINED_TABLE:
        return _missing_table(_quoted(text, '"'), url)
    if sqlstate == _PG_INVALID_CATALOG or (
        sqlstate is None and _PG_STARTUP_MISSING_DATABASE.search(text)
    ):
        return _missing_database(parsed, f"createdb {parsed.database}")
    if sqlstate in _PG_AUTH or (sqlstate is None and _PG_STARTUP_AUTH.search(text)):
        return _access_denied(parsed, text.rpartition("FATAL:")[2])
    return None


# MySQL / MariaDB error numbers (the first argument of the DBAPI error).
_MYSQL_NO_SUCH_TABLE = 1146
_MYSQL_UNKNOWN_DATABASE = 1049
# access denied: to a database (1044), for a user (1045), without a password (1698, MariaDB)
_MYSQL_ACCESS_DENIED = (1044, 1045, 1698)


def _mysql_error(exc: sa.exc.DBAPIError, parsed: URL, url: str) -> RuneQueueError | None:
    args: tuple[Any, ...] = exc.orig.args if exc.orig is not None else ()
    code = args[0] if args and isinstance(args[0], int) else None
    text = str(args[1]) if len(args) > 1 else str(exc.orig)
    if code == _MYSQL_NO_SUCH_TABLE:
        table = _quoted(text, "'")  # "Table 'db.jobs' doesn't exist"
        return _missing_table(table.rpartition(".")[2] if table else None, url)
    if code == _MYSQL_UNKNOWN_DATABASE:
        return _missing_database(parsed, f"CREATE DATABASE {parsed.database}")
    if code in _MYSQL_ACCESS_DENIED:
        return _access_denied(parsed, text)
    return None


_SQLITE_NO_SUCH_TABLE = "no such table: "
_SQLITE_CANNOT_OPEN = "unable to open database file"


def _sqlite_error(exc: sa.exc.DBAPIError, parsed: URL, url: str) -> RuneQueueError | None:
    text = str(exc.orig)
    if text.startswith(_SQLITE_NO_SUCH_TABLE):
        return _missing_table(text.removeprefix(_SQLITE_NO_SUCH_TABLE).strip(), url)
    path = _sqlite_path(parsed)
    if text == _SQLITE_CANNOT_OPEN and path is not None and not os.path.exists(path):
        return _missing_sqlite_file(path)
    return None  # "database is locked" and the like: unavailable, worth retrying


def _missing_table(table: str | None, url: str) -> MissingTable:
    what = f"table {table}" if table else "a runequeue table"
    return MissingTable(
        f"{what} does not exist in {redacted(url)}; run `rune migrate` to create it"
    )


def _missing_database(parsed: URL, create_it: str) -> MissingDatabase:
    return MissingDatabase(
        f"database {parsed.database!r} does not exist on {_server(parsed)}; "
        f"create it ({create_it}) or fix DATABASE_URL"
    )


def _missing_sqlite_file(path: str) -> MissingDatabase:
    directory = Path(path).resolve().parent
    where = path if os.path.isabs(path) else f"./{path} (in {Path.cwd()})"
    if not directory.is_dir():
        return MissingDatabase(
            f"no runequeue database at {where}: directory {directory} does not exist; "
            "create it or fix DATABASE_URL"
        )
    return MissingDatabase(
        f"no runequeue database at {where}; run `rune migrate` first, or cd to your application"
    )


def _access_denied(parsed: URL, reason: str) -> DatabaseAccessDenied:
    return DatabaseAccessDenied(
        f"database server {_server(parsed)} refused user {parsed.username!r}: "
        f"{one_line(reason)}; fix the user name or password in DATABASE_URL"
    )


def _server(parsed: URL) -> str:
    port = parsed.port or _DEFAULT_PORTS.get(parsed.get_backend_name())
    host = parsed.host or "localhost"
    return f"{host}:{port}" if port else host


def _quoted(text: str, quote: str) -> str | None:
    """The first ``quote``-delimited name in a server message."""
    found = re.search(f"{quote}([^{quote}]+){quote}", text)
    return found.group(1) if found else None
