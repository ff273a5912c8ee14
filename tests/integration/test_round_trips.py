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

    warm_up = PUSH_CHUNK + 1  # two calls

    async def dispatch_bulk() -> _Sends:
        # Connects the client's pooled connection, which a bulk of more than one call takes (a
        # single call goes on a connection of its own: see test_concurrent_async_dispatches...).
        await Queue.dispatch_many_async(config, [TypedUser(user_id=n) for n in range(warm_up)])
        sends = _Sends(monkeypatch)
        await Queue.dispatch_many_async(config, [TypedUser(user_id=n) for n in range(5000)])
        await Queue.aclose_connections()
        return sends

    sends = asyncio.run(dispatch_bulk())
    assert (sends.count, sends.scripts) == (1, 5000 // PUSH_CHUNK)  # one MULTI/EXEC of 5 calls
    assert Queue.size(config) == 5000 + warm_up


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


def test_concurrent_async_dispatches_share_round_trips(
    config: QueueConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    """50 requests dispatching at once from one event loop: one EVALSHA each, and nothing else,
    sent together in a few writes; each returns once its own job is stored."""

    async def dispatch_fifty() -> tuple[_Sends, list[str]]:
        await Queue.dispatch_async(config, TypedUser(user_id=0))  # connects, loads the script
        sends = _Sends(monkeypatch)
        ids = await asyncio.gather(
            *(Queue.dispatch_async(config, TypedUser(user_id=n)) for n in range(50))
        )
        await Queue.aclose_connections()
        return sends, ids

    sends, ids = asyncio.run(dispatch_fifty())
    assert sends.scripts == 50  # exactly one command per dispatch
    assert sends.count <= 5  # measured: 2 (the first call's, then the 49 made meanwhile)
    assert len(set(ids)) == 50
    assert Queue.size(config) == 51


def test_a_dispatch_cancelled_mid_round_trip_costs_the_others_nothing(config: QueueConfig) -> None:
    """The first caller sends for everyone; cancelled while it reads, it leaves replies unread:
    the connection is dropped, and every other caller repeats its push through the client."""

    async def scenario() -> list[str]:
        from runequeue.queue import _async_driver

        await Queue.dispatch_async(config, TypedUser(user_id=0))
        connection = _async_driver(config)._push_line._connection  # type: ignore[attr-defined]
        read, reading = connection.read_response, asyncio.Event()

        async def stalled_read(*args: Any, **kwargs: Any) -> Any:
            reading.set()
            await asyncio.Event().wait()  # a reply that never comes, until cancelled

        connection.read_response = stalled_read
        first = asyncio.create_task(Queue.dispatch_async(config, TypedUser(user_id=1)))
        await reading.wait()  # the first caller has sent its push and reads
        others = [
            asyncio.create_task(Queue.dispatch_async(config, TypedUser(user_id=n)))
            for n in range(2, 21)
        ]
        await asyncio.sleep(0)  # they wait for the first caller's next write
        first.cancel()
        ids = [str(job_id) for job_id in await asyncio.gather(*others)]
        assert first.cancelled()
        connection.read_response = read
        ids.append(await Queue.dispatch_async(config, TypedUser(user_id=99)))  # works on
        await Queue.aclose_connections()
        return ids

    ids = asyncio.run(scenario())
    assert len(set(ids)) == 20
    # The cancelled caller's push was sent: Redis stored it, though nobody read the reply.
    assert Queue.size(config) == 22


def test_a_dispatch_whose_connection_was_killed_is_stored_through_the_client(
    config: QueueConfig,
) -> None:
    import redis as blocking_redis

    async def scenario() -> None:
        from runequeue.queue import _async_driver

        await Queue.dispatch_async(config, TypedUser(user_id=1))
        line = _async_driver(config)._push_line  # type: ignore[attr-defined]
        host, port = line._connection._writer.get_extra_info("sockname")[:2]
        killer = blocking_redis.Redis.from_url(config.redis_url)
        killer.client_kill_filter(_type=None, addr=f"{host}:{port}")
        await Queue.dispatch_async(config, TypedUser(user_id=2))  # refused, then repeated
        await Queue.dispatch_async(config, TypedUser(user_id=3))
        await Queue.aclose_connections()

    asyncio.run(scenario())
    assert Queue.size(config) == 3
