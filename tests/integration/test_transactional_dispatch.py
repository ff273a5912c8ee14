"""Transactional dispatch on SQLite, PostgreSQL and MySQL: the job is written in the caller's own
transaction, so it exists if and only if that transaction commits; a process killed before the
commit leaves neither the application's row nor the job."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session

from runequeue import Queue, QueueConfig
from runequeue.errors import ConfigError
from tests.support.jobs import Record
from tests.workers import ROOT

orders_metadata = sa.MetaData()
orders = sa.Table("orders", orders_metadata, sa.Column("id", sa.Integer, primary_key=True))


@pytest.fixture
def db(database_url: str) -> Iterator[tuple[QueueConfig, sa.Engine]]:
    engine = sa.create_engine(_with_driver(database_url))
    orders_metadata.create_all(engine)
    yield QueueConfig(driver="database", database_url=database_url), engine
    orders_metadata.drop_all(engine)
    engine.dispose()


def _with_driver(url: str) -> str:
    return url.replace("postgresql://", "postgresql+psycopg://").replace(
        "mysql://", "mysql+pymysql://")  # fmt: skip


def _orders(engine: sa.Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(sa.select(sa.func.count()).select_from(orders)).scalar() or 0)


def test_rollback_leaves_no_job_and_commit_exactly_one(
    db: tuple[QueueConfig, sa.Engine], tmp_path: Path
) -> None:
    config, engine = db
    with engine.connect() as conn:
        conn.execute(orders.insert().values(id=1))
        Queue.dispatch(config, Record(str(tmp_path)), connection=conn)
        conn.rollback()
    assert Queue.size(config) == 0 and _orders(engine) == 0

    with engine.begin() as conn:
        conn.execute(orders.insert().values(id=2))
        Queue.dispatch(config, Record(str(tmp_path)), connection=conn)
        assert _orders(engine) == 0  # not visible before the commit
    assert Queue.size(config) == 1 and _orders(engine) == 1


def test_an_orm_session(db: tuple[QueueConfig, sa.Engine], tmp_path: Path) -> None:
    config, engine = db
    with Session(engine) as session:
        session.execute(orders.insert().values(id=1))
        Queue.dispatch(config, Record(str(tmp_path)), connection=session)
        session.rollback()
        session.execute(orders.insert().values(id=2))
        Queue.dispatch(config, Record(str(tmp_path)), connection=session)
        session.commit()
    assert Queue.size(config) == 1 and _orders(engine) == 1


def test_a_process_killed_before_commit_leaves_neither(
    db: tuple[QueueConfig, sa.Engine], tmp_path: Path
) -> None:
    config, engine = db
    script = textwrap.dedent(f"""
        import os, signal, sqlalchemy as sa
        from runequeue import Queue, QueueConfig
        from tests.support.jobs import Record
        from tests.integration.test_transactional_dispatch import orders
        engine = sa.create_engine({str(engine.url.render_as_string(hide_password=False))!r})
        config = QueueConfig(driver="database", database_url={config.database_url!r})
        conn = engine.connect()
        conn.execute(orders.insert().values(id=7))
        Queue.dispatch(config, Record({str(tmp_path)!r}), connection=conn)
        os.kill(os.getpid(), signal.SIGKILL)  # the crash: after both writes, before the commit
    """)
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, timeout=60,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})  # fmt: skip
    assert done.returncode == -9
    assert Queue.size(config) == 0 and _orders(engine) == 0


def test_async_connection_and_session(database_url: str, tmp_path: Path) -> None:
    if not database_url.startswith("postgresql"):
        pytest.skip("the async check runs on PostgreSQL (psycopg's async driver)")
    from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine

    config = QueueConfig(driver="database", database_url=database_url)

    async def scenario() -> None:
        engine = create_async_engine(_with_driver(database_url))
        try:
            async with engine.connect() as conn:
                await Queue.dispatch_async(config, Record(str(tmp_path)), connection=conn)
                await conn.rollback()
            async with AsyncSession(engine) as session:
                await Queue.dispatch_async(config, Record(str(tmp_path)), connection=session)
                await session.commit()
        finally:
            await engine.dispose()

    asyncio.run(scenario())
    assert Queue.size(config) == 1


def test_misuse_is_refused_plainly(
    db: tuple[QueueConfig, sa.Engine], config: QueueConfig, tmp_path: Path
) -> None:
    database, engine = db
    job = Record(str(tmp_path))
    with engine.connect() as conn:
        with pytest.raises(ConfigError, match="needs the database driver"):
            Queue.dispatch(config, job, connection=conn)  # config: the redis driver
        other = QueueConfig(driver="database", database_url=f"sqlite:///{tmp_path / 'x.db'}")
        if engine.dialect.name != "sqlite":
            with pytest.raises(ConfigError, match="where no worker looks"):
                Queue.dispatch(other, job, connection=conn)
        with pytest.raises(ConfigError, match="takes a SQLAlchemy Connection or Session"):
            Queue.dispatch(database, job, connection=object())
    assert Queue.size(database) == 0


def _dbapi_connection(url: str) -> Any:
    """A bare DB-API connection to ``url``'s database: psycopg 3, sqlite3 or PyMySQL."""
    parsed = sa.make_url(url)
    if parsed.get_backend_name() == "postgresql":
        import psycopg

        return psycopg.connect(host=parsed.host, port=parsed.port or 5432, user=parsed.username,
                               dbname=parsed.database)  # fmt: skip
    if parsed.get_backend_name() == "sqlite":
        import sqlite3

        return sqlite3.connect(str(parsed.database))
    import pymysql  # type: ignore[import-untyped]

    return pymysql.connect(host=parsed.host, port=parsed.port or 3306, user=parsed.username,
                           database=parsed.database)  # fmt: skip


def test_a_bare_dbapi_connection(db: tuple[QueueConfig, sa.Engine], tmp_path: Path) -> None:
    config, _ = db
    raw = _dbapi_connection(config.database_url)
    try:
        Queue.dispatch(config, Record(str(tmp_path)), connection=raw)
        Queue.dispatch(config, Record(str(tmp_path)), connection=raw)
        raw.rollback()
        assert Queue.size(config) == 0
        Queue.dispatch(config, Record(str(tmp_path)), connection=raw)
        if not config.database_url.startswith("sqlite"):  # (SQLite: locked until the commit)
            assert Queue.size(config) == 0  # not before the commit
        raw.commit()
        assert Queue.size(config) == 1
        other = QueueConfig(driver="database", database_url=f"sqlite:///{tmp_path / 'o.db'}")
        with pytest.raises(ConfigError, match="where no worker looks"):
            Queue.dispatch(other, Record(str(tmp_path)), connection=raw)
    finally:
        raw.close()
