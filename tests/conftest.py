"""Shared fixtures: a real Redis with a key prefix of each test's own, and databases of the
session's own on the real PostgreSQL and MariaDB servers (SQLite files per test).

A missing server skips its tests locally and fails them when CI=true.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis
import sqlalchemy as sa

from runequeue import Queue, QueueConfig
from runequeue.db_engine import create_engine
from runequeue.schema import metadata, migrate
from tests.support.servers import OwnRedisCluster

REDIS_URL = os.environ.get("RUNEQUEUE_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
SERVER_URLS = {
    "postgresql": os.environ.get(
        "RUNEQUEUE_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432"
    ),
    "mysql": os.environ.get("RUNEQUEUE_TEST_MYSQL_URL", "mysql://root@127.0.0.1:3306"),
}
ADMIN_DATABASES = {"postgresql": "test", "mysql": "test"}


def missing(message: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(scope="session")
def redis_url() -> str:
    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2).ping()
    except redis.RedisError as exc:
        missing(f"Redis is not reachable at {REDIS_URL}: {exc}")
    return REDIS_URL


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """A migrated SQLite database of the test's own."""
    url = f"sqlite:///{tmp_path / 'runequeue.sqlite3'}"
    migrate(url)
    return url


@pytest.fixture
def config(redis_url: str, sqlite_url: str) -> Iterator[QueueConfig]:
    """A redis-driver configuration whose keys no other test sees (deleted afterwards), recording
    failures in an SQLite database of the test's own."""
    prefix = f"rqtest-{uuid.uuid4().hex[:12]}"
    yield QueueConfig(
        driver="redis", redis_url=redis_url, redis_prefix=prefix, database_url=sqlite_url
    )
    client = redis.Redis.from_url(redis_url)
    keys = list(client.scan_iter(match=f"{prefix}:*", count=1000))
    if keys:
        client.delete(*keys)
    client.close()


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OwnRedisCluster]:
    """A Redis Cluster of the session's own: 3 masters and 3 replicas on free loopback ports."""
    if shutil.which("redis-server") is None or shutil.which("redis-cli") is None:
        missing("redis-server and redis-cli are needed to start a Redis Cluster")
    cluster = OwnRedisCluster(tmp_path_factory.mktemp("redis-cluster"))
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def cluster_config(redis_cluster: OwnRedisCluster, sqlite_url: str) -> Iterator[QueueConfig]:
    """`config` on the session's Redis Cluster."""
    prefix = f"rqtest-{uuid.uuid4().hex[:12]}"
    yield QueueConfig(
        driver="redis", redis_url=redis_cluster.url, redis_prefix=prefix, database_url=sqlite_url
    )
    client = redis.RedisCluster.from_url(redis_cluster.url.replace("redis+cluster", "redis"))
    for key in list(client.scan_iter(match=f"{prefix}:*", count=1000)):
        client.delete(key)
    client.close()


@pytest.fixture(autouse=True)
def _close_dispatch_connections() -> Iterator[None]:
    yield
    Queue.close_connections()


def _server_database(kind: str) -> Iterator[str]:
    """A database of this test session's own on the real server of ``kind``; dropped afterwards."""
    server = SERVER_URLS[kind]
    name = f"rqtest_{uuid.uuid4().hex[:12]}"
    admin = create_engine(f"{server}/{ADMIN_DATABASES[kind]}").execution_options(
        isolation_level="AUTOCOMMIT"
    )
    try:
        with admin.connect() as conn:
            conn.execute(sa.text(f"CREATE DATABASE {name}"))
    except sa.exc.OperationalError as exc:
        admin.dispose()
        missing(f"{kind} is not reachable at {server}: {exc.orig}")
    try:
        yield f"{server}/{name}"
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f"DROP DATABASE IF EXISTS {name}"))
        admin.dispose()


@pytest.fixture(scope="session")
def postgresql_database() -> Iterator[str]:
    yield from _server_database("postgresql")


@pytest.fixture(scope="session")
def mysql_database() -> Iterator[str]:
    yield from _server_database("mysql")


@pytest.fixture
def database_url_for(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[[str], str]:
    """Returns a freshly migrated database URL for a backend kind: sqlite, postgresql or mysql."""

    def fresh(kind: str) -> str:
        if kind == "sqlite":
            url = f"sqlite:///{tmp_path / 'runequeue-test.sqlite3'}"
        else:
            url = request.getfixturevalue(f"{kind}_database")
            engine = create_engine(url)
            metadata.drop_all(engine)
            engine.dispose()
        migrate(url)
        return url

    return fresh


@pytest.fixture(params=["sqlite", "postgresql", "mysql"])
def database_url(request: pytest.FixtureRequest, database_url_for: Callable[[str], str]) -> str:
    """A freshly migrated database on each backend the store supports."""
    return database_url_for(request.param)


@pytest.fixture
def backend_for(
    request: pytest.FixtureRequest, database_url_for: Callable[[str], str]
) -> Callable[[str], QueueConfig]:
    """Returns a queue configuration for a driver kind: redis, memory or database-<sqlite|...>."""

    def make(kind: str) -> QueueConfig:
        if kind in ("redis", "redis-cluster"):
            name = "config" if kind == "redis" else "cluster_config"
            config: QueueConfig = request.getfixturevalue(name)
            return config
        if kind == "memory":  # its failed jobs go to a migrated SQLite database
            return QueueConfig(driver="memory", database_url=database_url_for("sqlite"))
        url = database_url_for(kind.removeprefix("database-"))
        return QueueConfig(driver="database", database_url=url)

    return make


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--soak", action="store_true", help="Chaos scenarios at ten times the size.")
    parser.addoption(
        "--reliability-report",
        action="store_true",
        help="Write the chaos scenarios' figures into docs/reliability.md.",
    )
