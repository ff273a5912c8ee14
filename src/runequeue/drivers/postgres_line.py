"""A connection the PostgreSQL producer holds for its INSERT, past SQLAlchemy's per-call layers.

Through the pool, a single dispatch was a checkout with its ping (a round trip of its own), the
statement, and the check-in's reset: about 680 µs here. On a held psycopg connection in
autocommit it is the statement alone, prepared by psycopg after five runs: about 180 µs. The same
statement is sent (`sql.insert_jobs_from_json`, whose NOTIFY wakes idle workers), and its reply
is awaited, so a dispatch that returns has been stored, as ``synchronous_commit`` says.

Anything out of the ordinary (another thread using the connection, a connection that failed or
was dropped, any database error) raises `Fallback`, and the caller repeats the push through the
pool, which maps and reports errors as before. Pushes skip a job id already stored, so repeating
one whose reply was lost stores it once.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

if TYPE_CHECKING:  # imported when a line is made: psycopg is the optional `postgres` extra
    import psycopg

# After a failure only the pool is used for a while: during an outage its errors decide how long
# a dispatch takes to fail, without a connect attempt of ours added to each.
PAUSE_AFTER_FAILURE_S = 1.0
CONNECT_TIMEOUT_S = 5  # the engine's own (runequeue.db_engine.create_engine)


class Fallback(Exception):
    """The held connection could not run the statement; run it through the pool instead."""


class InsertLine:
    """One statement, run on one held psycopg connection, by one thread at a time."""

    def __init__(self, engine: sa.Engine, statement: sa.ClauseElement) -> None:
        self._psycopg: Any = importlib.import_module("psycopg")
        compiled = statement.compile(dialect=engine.dialect)
        self._sql = str(compiled)
        self._constants = dict(compiled.params)  # the literals SQLAlchemy made parameters
        args, kwargs = engine.dialect.create_connect_args(engine.url)
        self._connect_args = (args, {**kwargs, "connect_timeout": CONNECT_TIMEOUT_S})
        self._lock = threading.Lock()
        self._connection: psycopg.Connection[Any] | None = None
        self._pid = os.getpid()
        self._resume_at = 0.0

    def run(self, documents: Sequence[Mapping[str, Any]]) -> int:
        """Run the statement once per document, all in one transaction; returns the rows it
        returned (the jobs stored)."""
        with self._held() as connection:
            if len(documents) == 1:  # autocommit: the statement is its own transaction
                return len(connection.execute(self._sql, {**self._constants, **documents[0]})
                           .fetchall())  # fmt: skip
            with connection.transaction():
                return sum(
                    len(connection.execute(self._sql, {**self._constants, **document}).fetchall())
                    for document in documents
                )

    @contextlib.contextmanager
    def _held(self) -> Iterator[psycopg.Connection[Any]]:
        # A second thread dispatching at the same moment takes the pool instead of queueing
        # behind this one.
        if not self._lock.acquire(blocking=False):
            raise Fallback("the held connection is busy")
        try:
            if time.monotonic() < self._resume_at:
                raise Fallback("the held connection failed a moment ago")
            yield self._connect()
        except self._psycopg.Error as exc:
            # Its state is unknown (a reply unread, a transaction open): never trusted again.
            self._drop()
            self._resume_at = time.monotonic() + PAUSE_AFTER_FAILURE_S
            raise Fallback(str(exc)) from exc
        except BaseException:  # interrupted mid-call (KeyboardInterrupt): same reason
            self._drop()
            raise
        finally:
            self._lock.release()

    def _connect(self) -> psycopg.Connection[Any]:
        if self._pid != os.getpid():  # a forked child must never share its parent's socket
            self._connection, self._pid = None, os.getpid()
        connection = self._connection
        if connection is None or connection.closed:
            args, kwargs = self._connect_args
            connection = self._connection = self._psycopg.Connection.connect(
                *args, **kwargs, autocommit=True
            )
        return connection

    def _drop(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            with contextlib.suppress(Exception):
                connection.close()

    def close(self) -> None:
        with self._lock:
            self._drop()
