"""Redis's scripts against hostile and inconsistent state (issue 11, items 6 and 10).

R27: an id in a ready list with no payload is failed with a reason, never dropped silently.
R31: a non-integer attempts or tries value fails that one job, and loses none of the others (a
script that errors half-way is not rolled back by Redis); an id listed twice in the ready list
never runs twice at once.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import redis

from runequeue import Queue, QueueConfig
from runequeue.drivers.redis import QueueKeys, RedisDriver
from tests.chaos.report import Result
from tests.support.jobs import Event, Record, Sleepy, read_events
from tests.workers import failed_jobs, work


def _keys(config: QueueConfig) -> QueueKeys:
    return QueueKeys.of(config.redis_prefix, config.queue_name)


def _client(config: QueueConfig) -> redis.Redis:
    return redis.Redis.from_url(config.redis_url)


def _left_in_redis(config: QueueConfig) -> int:
    """Entries of every per-job structure still in Redis (0 once every job is settled)."""
    k = _keys(config)
    client = _client(config)
    try:
        lists = client.llen(k.ready)
        zsets = sum(client.zcard(key) for key in (k.delayed, k.reserved, k.dead))
        hashes = sum(client.hlen(key) for key in (k.payload, k.attempts, k.tries, k.token))
        return int(lists + zsets + hashes)
    finally:
        client.close()


def _done(ledger: Path) -> set[str]:
    return {e.job_id for e in read_events(ledger) if e.event == "done"}


def _lease_and_abandon(config: QueueConfig, count: int) -> list[str]:
    """Reserve ``count`` jobs with a 50 ms lease and walk away, as a killed worker would."""

    async def reserve() -> list[str]:
        driver = RedisDriver(config.redis_url, prefix=config.redis_prefix)
        try:
            batch = await driver.reserve(config.queue_name, count, lease_s=0.05, default_tries=3)
            return [item.job_id for item in batch.jobs]
        finally:
            await driver.close()

    ids = asyncio.run(reserve())
    assert len(ids) == count
    return ids


def test_r27_an_id_without_payload_is_failed_with_a_reason(
    config: QueueConfig, results: list[Result], tmp_path: Path
) -> None:
    ledger = tmp_path / "ledger"
    before = Queue.dispatch_many(config, [Record(ledger=str(ledger)) for _ in range(3)])
    client = _client(config)
    client.rpush(_keys(config).ready, "orphan-1")  # an id whose payload entry does not exist
    client.close()
    after = Queue.dispatch_many(config, [Record(ledger=str(ledger)) for _ in range(3)])

    work(config)

    failures = {f.job_id: f for f in failed_jobs(config)}
    results.append(
        Result("R27", "redis", 7, "an id pushed to the ready list with no payload", 0, 0, None,
               f"{len(failures)} failed as payload missing; {len(_done(ledger))} of 6 valid ran")
    )  # fmt: skip
    assert _done(ledger) == set(before + after)
    assert set(failures) == {"orphan-1"}
    assert "payload is missing" in failures["orphan-1"].summary
    assert _left_in_redis(config) == 0


def test_r31_a_corrupt_attempts_or_tries_value_fails_only_its_job(
    config: QueueConfig, results: list[Result], tmp_path: Path
) -> None:
    ledger = tmp_path / "ledger"
    k = _keys(config)
    # Two jobs whose leases expired (a dead worker's), one of them with a corrupt tries value...
    leased = Queue.dispatch_many(config, [Record(ledger=str(ledger)) for _ in range(2)])
    assert _lease_and_abandon(config, 2) == leased
    # ...and ready jobs around two with a corrupt attempts and a corrupt tries value.
    ready = Queue.dispatch_many(config, [Record(ledger=str(ledger)) for _ in range(6)])
    corrupt = {leased[0]: "tries", ready[1]: "attempts", ready[4]: "tries"}
    client = _client(config)
    for job_id, field in corrupt.items():
        client.hset(k.tries if field == "tries" else k.attempts, job_id, "not-a-number")
    client.close()
    asyncio.run(asyncio.sleep(0.1))  # the abandoned leases expire

    work(config)

    failures = {f.job_id: f for f in failed_jobs(config)}
    valid = set(leased + ready) - set(corrupt)
    lost = len(valid - _done(ledger)) + len(set(corrupt) - set(failures))
    results.append(
        Result("R31", "redis", 8, "non-integer attempts/tries values on 3 jobs (2 expired leases)",
               lost, 0, None, f"{len(failures)} failed with the reason, {len(_done(ledger))} ran")
    )  # fmt: skip
    assert _done(ledger) == valid
    assert set(failures) == set(corrupt)
    for job_id, field in corrupt.items():
        assert f"non-integer {field} value" in failures[job_id].summary
    assert _left_in_redis(config) == 0


def _overlaps(events: list[Event]) -> int:
    """Starts of a job while an earlier start of it had not finished yet."""
    running, overlaps = 0, 0
    for event in sorted(events, key=lambda e: e.at):
        if event.event == "start":
            overlaps += running > 0
            running += 1
        elif event.event == "done":
            running -= 1
    return overlaps


def test_r31_an_id_listed_twice_never_runs_twice_at_once(
    config: QueueConfig, results: list[Result], tmp_path: Path
) -> None:
    ledger = tmp_path / "ledger"
    k = _keys(config)
    # The same id twice in one reserve, and again a few jobs later while it is leased.
    (twice,) = Queue.dispatch_many(config, [Sleepy(ledger=str(ledger), seconds=1.0)])
    client = _client(config)
    client.rpush(k.ready, twice)
    quick = Queue.dispatch_many(config, [Sleepy(ledger=str(ledger), seconds=0) for _ in range(4)])
    client.rpush(k.ready, twice)
    client.close()

    work(config, concurrency=4)

    starts = [e for e in read_events(ledger) if e.job_id == twice]
    overlaps = _overlaps(starts)
    results.append(
        Result("R31", "redis", 5, "one id listed 3 times in the ready list", 0, overlaps, None,
               f"{sum(e.event == 'start' for e in starts)} start(s), {overlaps} overlapping")
    )  # fmt: skip
    assert overlaps == 0
    assert _done(ledger) == {twice, *quick}
    assert failed_jobs(config) == []
    assert _left_in_redis(config) == 0
