"""Transactional dispatch: ``Queue.dispatch(config, job, connection=conn)`` writes the job's row
in the caller's own database transaction (database driver), so the job exists if and only if
that transaction commits. It adds one INSERT to the transaction (and, on PostgreSQL, the NOTIFY
that wakes workers rides in it, delivered at commit), on the caller's connection.

``conn`` is a SQLAlchemy ``Connection`` or ``Session`` (``AsyncConnection`` or ``AsyncSession``
with ``dispatch_async``), or a bare psycopg 3, sqlite3 or PyMySQL connection
(`runequeue.transactional_dbapi`), on the database ``DATABASE_URL`` names.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa

from runequeue.config import QueueConfig
from runequeue.db_engine import normalized_url, redacted
from runequeue.drivers.base import Outgoing
from runequeue.errors import ConfigError, DispatchError


def store_in_transaction(
    config: QueueConfig, connection: object, items: Sequence[Outgoing]
) -> None:
    """Insert ``items`` in ``connection``'s transaction (not committed here)."""
    from runequeue import transactional_dbapi

    dialect = transactional_dbapi.dialect_of(connection)
    if dialect is not None:  # a bare DB-API connection: psycopg 3, sqlite3, PyMySQL
        _check_dbapi(config, connection, dialect, items)
        try:
            transactional_dbapi.store(connection, dialect, items)
        except Exception as exc:  # the DB-API's own errors: there is no common base class
            raise DispatchError(f"could not dispatch in your transaction: {exc}") from exc
        return
    conn = _sa_connection(connection)
    _check(config, conn, items)
    _store(conn, items)


async def store_in_transaction_async(
    config: QueueConfig, connection: object, items: Sequence[Outgoing]
) -> None:
    """`store_in_transaction` for an ``AsyncConnection`` or ``AsyncSession`` (a blocking
    ``Connection`` or ``Session`` works too)."""
    from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

    if isinstance(connection, AsyncConnection):
        await connection.run_sync(lambda conn: _checked_store(config, conn, items))
    elif isinstance(connection, AsyncSession):
        await connection.run_sync(
            lambda session: _checked_store(config, session.connection(), items)
        )
    else:
        store_in_transaction(config, connection, items)


def _checked_store(config: QueueConfig, conn: sa.Connection, items: Sequence[Outgoing]) -> None:
    _check(config, conn, items)
    _store(conn, items)


def _store(conn: sa.Connection, items: Sequence[Outgoing]) -> None:
    from runequeue.drivers.database_queue import store_jobs

    try:
        store_jobs(conn, items)
    except sa.exc.DBAPIError as exc:
        raise DispatchError(f"could not dispatch in your transaction: {exc.orig}") from exc


def _sa_connection(connection: object) -> sa.Connection:
    from sqlalchemy.orm import Session

    if isinstance(connection, sa.Connection):
        return connection
    if isinstance(connection, Session):
        return connection.connection()
    kind = f"{type(connection).__module__}.{type(connection).__name__}"
    raise ConfigError(
        f"connection= takes a SQLAlchemy Connection or Session (an AsyncConnection or "
        f"AsyncSession with dispatch_async), or a psycopg 3, sqlite3 or PyMySQL connection, "
        f"not a {kind}"
    )


def _check(config: QueueConfig, conn: sa.Connection, items: Sequence[Outgoing]) -> None:
    _check_driver_and_items(config, items)
    if not _same_database(conn.engine.url, normalized_url(config.database_url)):
        raise ConfigError(
            f"connection= is a connection to {redacted(str(conn.engine.url))}, but DATABASE_URL "
            f"names {redacted(config.database_url)}: the job would be stored where no worker "
            "looks"
        )


def _check_driver_and_items(config: QueueConfig, items: Sequence[Outgoing]) -> None:
    if config.driver != "database":
        raise ConfigError(
            f"connection= writes the job in your database transaction, so it needs the database "
            f"driver; this job goes to {config.driver!r}: add after_commit=True to send it once "
            "your Session commits"
        )
    if any(item.unique_key is not None for item in items):
        raise ConfigError("a unique job (unique_for) cannot be dispatched in your transaction "
                          "yet: dispatch it without connection=")  # fmt: skip


def _check_dbapi(
    config: QueueConfig, connection: object, dialect: str, items: Sequence[Outgoing]
) -> None:
    from runequeue import transactional_dbapi

    _check_driver_and_items(config, items)
    configured = normalized_url(config.database_url)
    if transactional_dbapi.place(connection, dialect) != _place(configured):
        raise ConfigError(
            f"connection= is a {dialect} connection to another database than DATABASE_URL "
            f"({redacted(config.database_url)}): the job would be stored where no worker looks"
        )


def _same_database(given: sa.URL, configured: sa.URL) -> bool:
    return _place(given) == _place(configured)


def _place(url: sa.URL) -> tuple[Any, ...]:
    """Where a URL points: backend, host, port and database (an SQLite file's real path)."""
    backend = url.get_backend_name()
    if backend == "sqlite":
        file = url.database or ""
        return (backend, file if file in ("", ":memory:") else os.path.realpath(file))
    host = url.host or "localhost"
    host = "127.0.0.1" if host in ("localhost", "::1") else host
    backend = "mysql" if backend == "mariadb" else backend
    default_port = {"postgresql": 5432, "mysql": 3306}.get(backend)
    return (backend, host, url.port or default_port, url.database)
