"""Transactional dispatch on a bare DB-API connection (psycopg 3, sqlite3, PyMySQL): the same
statements as the database driver's, compiled for the connection's database and run on its
cursor, inside its open transaction (never committed or rolled back here)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import mysql, postgresql, sqlite

from runequeue.drivers import sql
from runequeue.drivers.base import Outgoing

# (module of the connection's class) -> dialect name
_MODULES = {"psycopg": "postgresql", "sqlite3": "sqlite", "pymysql": "mysql"}


def dialect_of(connection: object) -> str | None:
    """The database of a DB-API connection this module can write on, or ``None``."""
    module = type(connection).__module__.split(".", 1)[0]
    return _MODULES.get(module)


def place(connection: Any, dialect: str) -> tuple[Any, ...]:
    """Where the connection points, as `transactional._same_database` compares it."""
    if dialect == "postgresql":
        info = connection.info
        host = info.host if info.host not in ("localhost", "::1") else "127.0.0.1"
        return ("postgresql", host, int(info.port), info.dbname)
    if dialect == "sqlite":
        rows = connection.execute("PRAGMA database_list").fetchall()
        file = next((row[2] for row in rows if row[1] == "main"), "") or ""
        return ("sqlite", os.path.realpath(file) if file else file)
    database = connection.db.decode() if isinstance(connection.db, bytes) else connection.db
    host = connection.host if connection.host not in ("localhost", "::1") else "127.0.0.1"
    return ("mysql", host, int(connection.port), database)


def store(connection: Any, dialect: str, items: Sequence[Outgoing]) -> int:
    """Insert ``items`` with the connection's own cursor; how many were stored."""
    cursor = connection.cursor()
    try:
        if dialect == "postgresql":
            pg = postgresql.psycopg.dialect()  # type: ignore[no-untyped-call]
            compiled = _clause(sql.insert_jobs_from_json()).compile(dialect=pg)
            stored = 0
            for document in sql.job_documents(items):
                cursor.execute(str(compiled), compiled.construct_params(document))
                stored += len(cursor.fetchall())
            return stored
        engine_dialect: sa.Dialect = sqlite.dialect() if dialect == "sqlite" else mysql.dialect()
        given = sql.job_rows(items)
        compiled = _clause(sql.insert_jobs(dialect)).compile(
            dialect=engine_dialect, column_keys=list(given[0]) if given else []
        )
        rows = [dict(compiled.construct_params(row) or {}) for row in given]
        order = getattr(compiled, "positiontup", None)  # qmark (sqlite3): positional
        params: list[Any] = [tuple(row[n] for n in order) for row in rows] if order else rows
        cursor.executemany(str(compiled), params)
        return int(cursor.rowcount)
    finally:
        cursor.close()


def _clause(statement: sa.Executable) -> sa.ClauseElement:
    assert isinstance(statement, sa.ClauseElement)
    return statement
