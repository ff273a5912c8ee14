"""PostgreSQL dispatch wakes idle workers with a NOTIFY carried by the INSERT itself: one per
dispatch that stored something (a bulk of 100 included), delivered at commit, none for a
rollback or for a job id already stored."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import psycopg
import sqlalchemy as sa

from runequeue import Queue, QueueConfig
from runequeue.drivers.base import Outgoing
from runequeue.drivers.database_queue import NOTIFY_CHANNEL, store_jobs
from tests.support.jobs import Record


def _notified(listener: psycopg.Connection[tuple[object, ...]]) -> int:
    return sum(1 for _ in listener.notifies(timeout=0.3))


def test_one_notify_per_dispatch_at_commit(
    database_url_for: Callable[[str], str], tmp_path: Path
) -> None:
    url = database_url_for("postgresql")
    config = QueueConfig(driver="database", database_url=url)
    with psycopg.connect(url, autocommit=True) as listener:
        listener.execute(f"LISTEN {NOTIFY_CHANNEL}")
        Queue.dispatch_many(config, [Record(str(tmp_path)) for _ in range(100)])
        assert _notified(listener) == 1

        engine = sa.create_engine(url.replace("postgresql://", "postgresql+psycopg://"))
        item = Outgoing("f" * 32, "default", b'{"v":3}')
        with engine.connect() as conn:
            assert store_jobs(conn, [item]) == 1
            assert _notified(listener) == 0  # not before the commit
            conn.commit()
        assert _notified(listener) == 1
        with engine.connect() as conn:
            assert store_jobs(conn, [item]) == 0  # the id is stored already: no wake-up
            conn.commit()
            store_jobs(conn, [Outgoing("e" * 32, "default", b'{"v":3}')])
            conn.rollback()
        assert _notified(listener) == 0
        engine.dispose()
