"""Reserve and ack batches larger than one slice of the Lua scripts (Lua's unpack has a stack
limit, so the scripts work through a batch slice by slice)."""

from __future__ import annotations

import asyncio
import dataclasses

from runequeue import Queue, QueueConfig
from runequeue.drivers.redis import RedisDriver
from tests.support.jobs import Record


def test_one_reserve_and_one_ack_of_2500_jobs(config: QueueConfig) -> None:
    ids = Queue.dispatch_many(config, [Record(ledger="-", tag=str(n)) for n in range(2_500)])

    async def reserve_and_ack() -> tuple[list[str], list[int], list[bool], list[bool]]:
        driver = RedisDriver(config.redis_url, prefix=config.redis_prefix)
        try:
            batch = await driver.reserve(config.queue_name, 2_500, lease_s=30, default_tries=3)
            jobs = batch.jobs
            stale = [dataclasses.replace(job, token="not-the-lease") for job in jobs[:700]]
            refused = await driver.ack(stale)
            acked = await driver.ack(jobs)
        finally:
            await driver.close()
        return [job.job_id for job in jobs], [job.attempts for job in jobs], refused, acked

    reserved, attempts, refused, acked = asyncio.run(reserve_and_ack())
    assert reserved == ids
    assert attempts == [1] * 2_500
    assert refused == [False] * 700
    assert acked == [True] * 2_500
    assert Queue.size(config) == 0


def test_payloads_come_back_with_their_own_ids(config: QueueConfig) -> None:
    ids = Queue.dispatch_many(config, [Record(ledger="-", tag=str(n)) for n in range(1_200)])

    async def reserve() -> dict[str, bytes]:
        driver = RedisDriver(config.redis_url, prefix=config.redis_prefix)
        try:
            batch = await driver.reserve(config.queue_name, 1_200, lease_s=30, default_tries=3)
        finally:
            await driver.close()
        return {job.job_id: job.raw for job in batch.jobs}

    payloads = asyncio.run(reserve())
    assert list(payloads) == ids
    for n, job_id in enumerate(ids):
        assert f'"tag":"{n}"'.encode() in payloads[job_id]
        assert f'"id":"{job_id}"'.encode() in payloads[job_id]
