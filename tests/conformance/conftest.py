"""One fixture, `backend`: a queue configuration on each driver the conformance suite covers.

The drivers come from the registry (`runequeue.drivers.registry.BACKENDS`), so a new backend is
proved by this suite as soon as it is registered; the database driver runs on each of its three
databases.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import pytest

from runequeue import Queue, QueueConfig
from runequeue.drivers import backend_of
from runequeue.drivers.memory import default_store
from runequeue.drivers.registry import BACKENDS

DATABASES = ["sqlite", "postgresql", "mysql"]
# The database driver on each of its databases; Redis on one server and on a Redis Cluster of
# the session's own (3 masters, 3 replicas).
DRIVERS = [
    kind
    for name in BACKENDS
    for kind in (
        [f"database-{db}" for db in DATABASES]
        if name == "database"
        else ["redis", "redis-cluster"]
        if name == "redis"
        else [name]
    )
]


@pytest.fixture(params=DRIVERS)
def backend(request: pytest.FixtureRequest) -> Iterator[QueueConfig]:
    """Redis (one server, or a Cluster) under a key prefix of its own, the database driver on a
    migrated database, or the memory driver, emptied before each test."""
    config: QueueConfig = request.getfixturevalue("backend_for")(request.param)
    default_store().reset()
    yield dataclasses.replace(config, retry_after_s=30)
    Queue.close_connections()


def needs_other_processes(config: QueueConfig) -> None:
    """Skip a test that runs a worker in another process on a backend no other process sees."""
    if not backend_of(config).shared:
        pytest.skip(f"the {config.driver} driver keeps its jobs inside one process")
