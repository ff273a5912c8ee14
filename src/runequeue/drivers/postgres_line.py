"""A connection the PostgreSQL producer holds for its INSERT, past SQLAlchemy's per-call layers.

Through the pool, a single dispatch was a checkout with its ping (a round trip of its own), the
statement, and the check-in's reset: about 680 µs here. On a held psycopg connection in
autocommit it is the statement alone, prepared by psycopg after five runs: about 350 µs, of which
the commit's WAL flush is about 160. The same statement is sent (`sql.insert_jobs_from_json`,
whose NOTIFY wakes idle workers), and its reply is awaited, so a dispatch that returns has been
stored, as ``synchronous_commit`` says.

Anything out of the ordinary (another thread using the connection, a connection that failed or
was dropped, any database error) raises `runequeue.drivers.held.Fallback`, and the caller repeats
the push through the pool, which maps and reports errors as before. Pushes skip a job id already
stored, so repeating one whose reply was lost stores it once.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from runequeue.drivers.held import HeldConnection

if TYPE_CHECKING:  # imported when a line is made: psycopg is the optional `postgres` extra
    import psycopg

CONNECT_TIMEOUT_S = 5  # the engine's own (runequeue.db_engine.create_engine)


class InsertLine:
    """One statement, run on one held psycopg connection, by one thread at a time."""

    def __init__(self, engine: sa.Engine, statement: sa.ClauseElement) -> None:
        self._psycopg: Any = importlib.import_module("psycopg")
        compiled = statement.compile(dialect=engine.dialect)
        self._sql = str(compiled)
        self._constants = dict(compiled.params)  # the literals SQLAlchemy made parameters
        args, kwargs = engine.dialect.create_connect_args(engine.url)
        self._connect_args = (args, {**kwargs, "connect_timeout": CONNECT_TIMEOUT_S})
        self._line: HeldConnection[psycopg.Connection[Any]] = HeldConnection(
            self._connect, lambda connection: connection.close(), (self._psycopg.Error,)
        )

    def run(self, documents: Sequence[Mapping[str, Any]]) -> int:
        """Run the statement once per document, all in one transaction; returns the rows it
        returned (the jobs stored)."""
        with self._line.held() as connection:
            if len(documents) == 1:  # autocommit: the statement is its own transaction
                return len(connection.execute(self._sql, {**self._constants, **documents[0]})
                           .fetchall())  # fmt: skip
            with connection.transaction():
                return sum(
                    len(connection.execute(self._sql, {**self._constants, **document}).fetchall())
                    for document in documents
                )

    def _connect(self) -> psycopg.Connection[Any]:
        args, kwargs = self._connect_args
        connection: psycopg.Connection[Any] = self._psycopg.Connection.connect(
            *args, **kwargs, autocommit=True
        )
        return connection

    def close(self) -> None:
        self._line.close()
