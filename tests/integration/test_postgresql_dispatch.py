"""PostgreSQL's dispatch on a connection the producer holds (`runequeue.drivers.postgres_line`):
one statement per dispatch, and every job stored exactly once when that connection is killed,
fails, or is wanted by several threads at once."""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable
from typing import Any

import psycopg
import pytest
import sqlalchemy as sa

from runequeue import Queue, QueueConfig
from runequeue.db_engine import create_engine
from runequeue.errors import DispatchError
from tests.support.jobs import Record


@pytest.fixture
def pg_config(database_url_for: Callable[[str], str]) -> QueueConfig:
    return QueueConfig(driver="database", database_url=database_url_for("postgresql"),
                       queue_name="line")  # fmt: skip


def stored(config: QueueConfig) -> list[str]:
    engine = create_engine(config.database_url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(sa.text("SELECT uuid FROM jobs WHERE queue = :queue ORDER BY id"),
                                {"queue": config.queue_name}).all()  # fmt: skip
    finally:
        engine.dispose()
    return [row.uuid for row in rows]


def test_a_dispatch_is_one_statement(
    pg_config: QueueConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    Queue.dispatch(pg_config, Record(ledger="-"))  # the line's connection is made
    statements = 0
    execute = psycopg.Cursor.execute

    def counted(self: Any, *args: Any, **kwargs: Any) -> Any:
        nonlocal statements
        statements += 1
        return execute(self, *args, **kwargs)

    monkeypatch.setattr(psycopg.Cursor, "execute", counted)
    ids = [Queue.dispatch(pg_config, Record(ledger="-")) for _ in range(50)]
    monkeypatch.undo()
    # Through the pool it was two: the checkout's ping, then the INSERT.
    assert statements == 50
    assert stored(pg_config)[1:] == ids


def test_a_dispatch_after_its_connection_was_killed_is_stored_once(pg_config: QueueConfig) -> None:
    first = Queue.dispatch(pg_config, Record(ledger="-"))
    engine = create_engine(pg_config.database_url)
    with engine.connect() as conn:  # every other connection to this database, the line's too
        killed = conn.execute(sa.text(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )).scalar()  # fmt: skip
    engine.dispose()
    assert killed
    after = [Queue.dispatch(pg_config, Record(ledger="-")) for _ in range(3)]
    assert stored(pg_config) == [first, *after]


def test_a_failing_statement_is_reported_as_through_the_pool(pg_config: QueueConfig) -> None:
    Queue.dispatch(pg_config, Record(ledger="-"))
    engine = create_engine(pg_config.database_url)
    with engine.begin() as conn:
        conn.execute(sa.text("ALTER TABLE jobs RENAME TO jobs_elsewhere"))
    try:
        with pytest.raises(DispatchError, match="rune migrate"):
            Queue.dispatch(pg_config, Record(ledger="-"))
    finally:
        with engine.begin() as conn:
            conn.execute(sa.text("ALTER TABLE jobs_elsewhere RENAME TO jobs"))
        engine.dispose()
    Queue.close_connections()  # the line is paused after a failure; a new producer starts clean
    after = Queue.dispatch(pg_config, Record(ledger="-"))
    assert stored(pg_config)[-1] == after


def test_threads_dispatching_at_once_each_store_every_job(pg_config: QueueConfig) -> None:
    config = dataclasses.replace(pg_config, queue_name="threads")
    ids: list[str] = []
    lock = threading.Lock()

    def dispatch_some() -> None:
        mine = [Queue.dispatch(config, Record(ledger="-")) for _ in range(50)]
        with lock:
            ids.extend(mine)

    threads = [threading.Thread(target=dispatch_some) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(stored(config)) == sorted(ids)
    assert len(set(ids)) == 200
