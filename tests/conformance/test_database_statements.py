"""A regression guard for the database driver's hot path that is not a timing: SQL statements
per 1,000 processed jobs, like the Redis driver's round trips (test_round_trips.py).

A reserve takes many jobs in one statement (on PostgreSQL, one statement in all) and
acknowledgements go out in batches, so a thousand jobs cost a few dozen statements, not
thousands. A change that adds a statement per job fails here.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import sqlalchemy as sa

from runequeue import Queue, QueueConfig
from tests.support.jobs import TypedUser
from tests.workers import run_worker

JOBS = 2000
# Measured (statements per 1,000 jobs, concurrency 50; SQLite's BEGIN IMMEDIATE counts as one):
# PostgreSQL about 45, SQLite about 150, MySQL about 1,100 (an acknowledgement there is one
# DELETE per job: see `DatabaseQueue.ack`).
CEILING_PER_1000 = {"postgresql": 100, "sqlite": 300, "mysql": 1300}


@pytest.fixture(params=["sqlite", "postgresql", "mysql"])
def database_config(request: pytest.FixtureRequest, database_url_for: Any) -> QueueConfig:
    return QueueConfig(driver="database", database_url=database_url_for(request.param),
                       queue_name="statements")  # fmt: skip


def test_statements_per_thousand_jobs(
    database_config: QueueConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    Queue.dispatch_many(database_config, [TypedUser(user_id=n) for n in range(JOBS)])
    statements = 0

    def counted(*_: Any) -> None:
        nonlocal statements
        statements += 1

    sa.event.listen(sa.engine.Engine, "before_cursor_execute", counted)
    backend = sa.make_url(database_config.database_url).get_backend_name()
    if backend == "postgresql":
        import psycopg

        execute = psycopg.AsyncCursor.execute

        async def counted_async(self: Any, *args: Any, **kwargs: Any) -> Any:
            counted()
            return await execute(self, *args, **kwargs)

        monkeypatch.setattr(psycopg.AsyncCursor, "execute", counted_async)
    try:
        worker = asyncio.run(run_worker(database_config, concurrency=50, publish_metrics=False))
    finally:
        sa.event.remove(sa.engine.Engine, "before_cursor_execute", counted)

    assert worker.processed == JOBS
    per_1000 = statements * 1000 / JOBS
    assert per_1000 <= CEILING_PER_1000[backend], f"{per_1000:.0f} statements per 1,000 jobs"
