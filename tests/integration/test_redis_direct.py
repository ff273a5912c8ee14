"""The producer's held connection: a dispatch still lands exactly once when that connection breaks,
when Redis forgets its scripts, or when several threads dispatch at once."""

from __future__ import annotations

import asyncio
import dataclasses
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from runequeue import Queue, QueueConfig
from runequeue.drivers.redis import QueueKeys, RedisDriver
from tests.support.jobs import Record
from tests.support.servers import OwnRedis


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[OwnRedis]:
    server = OwnRedis(tmp_path, "--appendonly", "no")
    server.start()
    yield server
    Queue.close_connections()
    server.stop()


@pytest.fixture
def own_config(own_redis: OwnRedis, sqlite_url: str) -> QueueConfig:
    return QueueConfig(driver="redis", redis_url=own_redis.url, database_url=sqlite_url)


def stored_ids(config: QueueConfig) -> list[str]:
    client = redis.Redis.from_url(config.redis_url)
    try:
        keys = QueueKeys.of(config.redis_prefix, config.queue_name)
        ids: list[bytes] = client.lrange(keys.ready, 0, -1)  # type: ignore[assignment]
        return [raw.decode() for raw in ids]
    finally:
        client.close()


def test_dispatch_survives_a_dropped_connection(own_config: QueueConfig) -> None:
    first = Queue.dispatch(own_config, Record(ledger="-"))
    client = redis.Redis.from_url(own_config.redis_url)
    # The server closes every connection but this one: the producer's held one included.
    assert client.client_kill_filter(skipme=True, _type="normal") >= 1
    client.close()
    second = Queue.dispatch(own_config, Record(ledger="-"))
    third = Queue.dispatch(own_config, Record(ledger="-"))
    assert stored_ids(own_config) == [first, second, third]


def test_dispatch_survives_a_script_flush(own_config: QueueConfig) -> None:
    first = Queue.dispatch(own_config, Record(ledger="-"))
    client = redis.Redis.from_url(own_config.redis_url)
    client.script_flush()
    client.close()
    second = Queue.dispatch(own_config, Record(ledger="-"))
    assert stored_ids(own_config) == [first, second]


def test_bulk_dispatch_is_sent_in_bounded_script_calls(own_config: QueueConfig) -> None:
    ids = Queue.dispatch_many(own_config, [Record(ledger="-") for _ in range(2_500)])
    client = redis.Redis.from_url(own_config.redis_url)
    calls = client.info("commandstats")["cmdstat_evalsha"]["calls"]
    client.close()
    assert stored_ids(own_config) == ids
    assert calls == 3  # 1,000 jobs a script at most: no one script holds Redis for long


def test_threads_dispatching_at_once_each_store_every_job(config: QueueConfig) -> None:
    config = dataclasses.replace(config, queue_name="threads")
    ids: list[str] = []
    lock = threading.Lock()

    def dispatch_one_at_a_time() -> None:
        mine = [Queue.dispatch(config, Record(ledger="-")) for _ in range(100)]
        with lock:
            ids.extend(mine)

    threads = [threading.Thread(target=dispatch_one_at_a_time) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(stored_ids(config)) == sorted(ids)
    assert len(set(ids)) == 800


def test_a_woken_worker_reserves_after_redis_lost_its_scripts(own_config: QueueConfig) -> None:
    job_id = Queue.dispatch(own_config, Record(ledger="-"))
    client = redis.Redis.from_url(own_config.redis_url)
    client.script_flush()
    client.close()

    async def wake() -> list[str]:
        driver = RedisDriver(own_config.redis_url, prefix=own_config.redis_prefix)
        try:
            batch = await driver.wait_and_reserve(
                own_config.queue_name, 1.0, 10, lease_s=30, default_tries=3
            )
        finally:
            await driver.close()
        return [item.job_id for item in batch.jobs]

    assert asyncio.run(wake()) == [job_id]
