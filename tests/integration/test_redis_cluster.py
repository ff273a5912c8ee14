"""runequeue on a real Redis Cluster (3 masters, 3 replicas, started by the session): a worker of
queues on different masters waits without polling, a bulk dispatch spans them, and a URL of the
wrong kind is refused with the URL to use. (The conformance suite runs every contract there too.)
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from pathlib import Path

import pytest
import redis

from runequeue import Queue, QueueConfig
from runequeue.drivers import open_driver
from runequeue.drivers.redis import RedisDriver
from runequeue.errors import ConfigError, DispatchError
from tests.conformance.test_wakeups import IDLE_SLEEP_S, done, idle_worker
from tests.support.jobs import Record
from tests.support.servers import OwnRedisCluster
from tests.workers import wait_until

QUEUES = ("q0", "q4", "high")


@dataclasses.dataclass
class OnQ0(Record, name="tests.cluster.OnQ0"):
    queue = "q0"


@dataclasses.dataclass
class OnQ4(Record, name="tests.cluster.OnQ4"):
    queue = "q4"


@dataclasses.dataclass
class OnHigh(Record, name="tests.cluster.OnHigh"):
    queue = "high"


def masters_of(cluster: OwnRedisCluster, config: QueueConfig) -> dict[str, str]:
    """Each queue's master, as host:port."""
    client = redis.RedisCluster.from_url(cluster.url.replace("redis+cluster", "redis"))
    try:
        return {
            queue: client.get_node_from_key(f"{config.redis_prefix}:{{{queue}}}").name  # type: ignore[no-untyped-call]
            for queue in QUEUES
        }
    finally:
        client.close()


def script_calls(cluster: OwnRedisCluster) -> int:
    """EVALSHA calls so far, summed over every node."""
    total = 0
    for node in cluster.nodes:
        client = redis.Redis.from_url(node.url)
        try:
            total += int(client.info("commandstats").get("cmdstat_evalsha", {}).get("calls", 0))
        finally:
            client.close()
    return total


def test_a_worker_of_queues_on_three_masters_waits_on_each_without_polling(
    redis_cluster: OwnRedisCluster, cluster_config: QueueConfig, tmp_path: Path
) -> None:
    assert len(set(masters_of(redis_cluster, cluster_config).values())) >= 2
    with idle_worker(cluster_config, queues=QUEUES, sweep_interval_s=60.0):
        time.sleep(1.0)  # started, and into its idle wait
        before = script_calls(redis_cluster)
        time.sleep(2.0)
        idle_calls = script_calls(redis_cluster) - before
        ledger = tmp_path / "ledger"
        Queue.dispatch(cluster_config, Record(ledger=str(ledger)), queue="q4")
        wait_until(lambda: done(ledger), IDLE_SLEEP_S * 2, "the job on q4")
    # Idle, it writes its record and metrics (4 script calls in 2 s here); a worker whose wait
    # failed (a BLPOP of keys in several slots) would reserve from each queue at every retry.
    assert idle_calls < 10, idle_calls


def test_a_bulk_dispatch_to_queues_on_several_masters_stores_every_job(
    cluster_config: QueueConfig,
) -> None:
    jobs = [OnQ0(ledger="-"), OnQ4(ledger="-"), OnHigh(ledger="-")] * 800
    assert len(Queue.dispatch_many(cluster_config, jobs)) == 2400
    assert [Queue.size(cluster_config, queue) for queue in QUEUES] == [800, 800, 800]

    async def through_the_worker_driver() -> int:
        driver = open_driver(cluster_config)
        try:
            return await driver.size("high")
        finally:
            await driver.close()

    assert asyncio.run(through_the_worker_driver()) == 800


def test_a_cluster_url_to_a_single_server_is_refused_with_the_url_to_use(
    redis_url: str, tmp_path: Path
) -> None:
    host_port = redis_url.split("://")[1].split("/")[0]
    config = QueueConfig(driver="redis", redis_url=f"redis+cluster://{host_port}")
    with pytest.raises(DispatchError, match=f"is not a Redis Cluster.*redis://{host_port}/0"):
        Queue.dispatch(config, Record(ledger="-"))

    async def start() -> None:
        driver = open_driver(config)
        try:
            assert isinstance(driver, RedisDriver)
            await driver.check()
        finally:
            await driver.close()

    with pytest.raises(ConfigError, match="is not a Redis Cluster"):
        asyncio.run(start())


def test_a_plain_url_to_one_cluster_node_is_refused_with_the_url_to_use(
    redis_cluster: OwnRedisCluster, cluster_config: QueueConfig
) -> None:
    node = redis_cluster.nodes[0]
    plain = QueueConfig(
        driver="redis", redis_url=node.url, redis_prefix=cluster_config.redis_prefix
    )
    elsewhere = next(
        queue
        for queue, master in masters_of(redis_cluster, cluster_config).items()
        if master != f"127.0.0.1:{node.port}"
    )
    with pytest.raises(DispatchError, match=r"use REDIS_URL=redis\+cluster://127\.0\.0\.1"):
        Queue.dispatch(plain, Record(ledger="-"), queue=elsewhere)

    async def start() -> None:
        driver = open_driver(plain)
        try:
            await driver.check()  # type: ignore[attr-defined]
        finally:
            await driver.close()

    with pytest.raises(ConfigError, match="is a node of a Redis Cluster"):
        asyncio.run(start())


def test_a_queue_name_with_a_brace_is_refused_at_dispatch(cluster_config: QueueConfig) -> None:
    with pytest.raises(ConfigError, match="has a brace"):
        Queue.dispatch(cluster_config, Record(ledger="-"), queue="a{b}")
