"""A regression guard for the worker's hot path that is not a timing: Redis round trips per job.

Reserve takes many jobs per call and acknowledgements go out in batches, so a thousand jobs cost
a few dozen round trips, not thousands. A change that adds a round trip per job fails here.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import redis.asyncio.connection
import redis.connection

from runequeue import Bus, Queue, QueueConfig
from tests.support.jobs import TypedUser
from tests.workers import run_worker

JOBS = 2000
CEILING_PER_1000 = 100  # measured: about 45


def test_round_trips_per_thousand_jobs(
    config: QueueConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    Queue.dispatch_many(config, [TypedUser(user_id=n) for n in range(JOBS)])
    sends = 0
    send = redis.asyncio.connection.AbstractConnection.send_packed_command

    async def counted(self: Any, *args: Any, **kwargs: Any) -> None:
        nonlocal sends
        sends += 1  # one send per command or pipeline: one round trip
        await send(self, *args, **kwargs)

    monkeypatch.setattr(redis.asyncio.connection.AbstractConnection, "send_packed_command", counted)
    worker = asyncio.run(run_worker(config, concurrency=50))

    assert worker.processed == JOBS
    assert sends * 1000 / JOBS <= CEILING_PER_1000


class _Sends:
    """Counts the commands (or pipelines) redis.asyncio sends: one each is one round trip."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.count = 0
        self.scripts = 0  # EVALSHA commands among them
        send = redis.asyncio.connection.AbstractConnection.send_packed_command

        async def counted(connection: Any, command: Any, *args: Any, **kwargs: Any) -> None:
            self.count += 1
            packed = command if isinstance(command, bytes) else b"".join(command)
            self.scripts += packed.count(b"EVALSHA")
            await send(connection, command, *args, **kwargs)

        monkeypatch.setattr(
            redis.asyncio.connection.AbstractConnection, "send_packed_command", counted
        )


def test_async_dispatch_is_one_round_trip(
    config: QueueConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def dispatch_ten() -> int:
        await Queue.dispatch_async(config, TypedUser(user_id=0))  # connects, loads the script
        sends = _Sends(monkeypatch)
        for n in range(10):
            await Queue.dispatch_async(config, TypedUser(user_id=n))
        await Queue.aclose_connections()
        return sends.count

    assert asyncio.run(dispatch_ten()) == 10
    assert Queue.size(config) == 11


def test_bulk_async_dispatch_is_chunked_and_one_round_trip(
    config: QueueConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    from runequeue.drivers.redis import PUSH_CHUNK

    async def dispatch_bulk() -> _Sends:
        await Queue.dispatch_async(config, TypedUser(user_id=0))
        sends = _Sends(monkeypatch)
        await Queue.dispatch_many_async(config, [TypedUser(user_id=n) for n in range(5000)])
        await Queue.aclose_connections()
        return sends

    sends = asyncio.run(dispatch_bulk())
    assert (sends.count, sends.scripts) == (1, 5000 // PUSH_CHUNK)  # one MULTI/EXEC of 5 calls
    assert Queue.size(config) == 5001


def test_async_dispatch_after_redis_lost_its_scripts(config: QueueConfig) -> None:
    import redis as blocking_redis

    async def dispatch_twice() -> None:
        await Queue.dispatch_async(config, TypedUser(user_id=1))
        blocking_redis.Redis.from_url(config.redis_url).script_flush()
        await Queue.dispatch_async(config, TypedUser(user_id=2))  # NOSCRIPT, loaded, stored
        blocking_redis.Redis.from_url(config.redis_url).script_flush()
        await Queue.dispatch_many_async(config, [TypedUser(user_id=n) for n in range(2500)])
        await Queue.aclose_connections()

    asyncio.run(dispatch_twice())
    assert Queue.size(config) == 2502


def test_a_batch_of_ten_thousand_jobs_is_dispatched_in_a_bounded_number_of_round_trips(
    config: QueueConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    Bus.batch([TypedUser(user_id=0)]).dispatch(config)  # connects
    sends = 0
    send: Any = redis.connection.AbstractConnection.send_packed_command

    def counted(self: Any, *args: Any, **kwargs: Any) -> None:
        nonlocal sends
        sends += 1
        send(self, *args, **kwargs)

    monkeypatch.setattr(redis.connection.AbstractConnection, "send_packed_command", counted)
    batch = Bus.batch([TypedUser(user_id=n) for n in range(10_000)]).dispatch(config)

    # One MULTI/EXEC (the record, the index, and ten push calls of 1,000), and redis-py's
    # SCRIPT EXISTS for the scripts in it.
    assert sends <= 2
    assert Queue.size(config) == 10_001
    assert batch.total_jobs == 10_000
