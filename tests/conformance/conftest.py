"""One fixture, `backend`: a queue configuration on each driver the conformance suite covers."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import pytest

from runequeue import Queue, QueueConfig

DRIVERS = ["redis", "database-sqlite", "database-postgresql", "database-mysql"]


@pytest.fixture(params=DRIVERS)
def backend(request: pytest.FixtureRequest) -> Iterator[QueueConfig]:
    """Redis under a key prefix of its own, or the database driver on a migrated database."""
    config: QueueConfig = request.getfixturevalue("backend_for")(request.param)
    yield dataclasses.replace(config, retry_after_s=30)
    Queue.close_connections()
