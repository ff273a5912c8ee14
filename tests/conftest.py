"""Shared fixtures: a real Redis with a key prefix of each test's own, and worker helpers.

A missing Redis skips the Redis tests locally and fails them when CI=true.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest
import redis

from runequeue import Queue, QueueConfig

REDIS_URL = os.environ.get("RUNEQUEUE_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


@pytest.fixture(scope="session")
def redis_url() -> str:
    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2).ping()
    except redis.RedisError as exc:
        message = f"Redis is not reachable at {REDIS_URL}: {exc}"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return REDIS_URL


@pytest.fixture
def config(redis_url: str) -> Iterator[QueueConfig]:
    """A redis-driver configuration whose keys no other test sees; deleted afterwards."""
    prefix = f"rqtest-{uuid.uuid4().hex[:12]}"
    yield QueueConfig(driver="redis", redis_url=redis_url, redis_prefix=prefix)
    client = redis.Redis.from_url(redis_url)
    keys = list(client.scan_iter(match=f"{prefix}:*", count=1000))
    if keys:
        client.delete(*keys)
    client.close()


@pytest.fixture(autouse=True)
def _close_dispatch_connections() -> Iterator[None]:
    yield
    Queue.close_connections()
