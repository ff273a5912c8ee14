"""A wake-up cut short keeps no job from the queue.

`RedisDriver.wait_and_reserve` pipelines a reserve behind its BLPOP. Cancelled once Redis has run
that reserve, it still reads the reply to the end and returns the jobs it leased, for the worker
to put back (`Worker._put_back_orphans`); cancelled while BLPOP still blocks, it drops the
blocking connection, and nothing is reserved.

A proxy holds back the reserve's reply partway on the wire, so the cancel lands where it would in
production, inside redis-py's read of a reply half arrived: a window otherwise microseconds wide.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlsplit

import hiredis
import pytest
import redis
import redis.asyncio

from runequeue import Queue, QueueConfig
from runequeue.drivers.base import Batch
from runequeue.drivers.redis import QueueKeys, RedisDriver
from tests.support.jobs import Record

WAIT_S = 30.0  # BLPOP's own timeout: far longer than any test here waits for it
BOUND_S = 5.0  # the most a step may take before the test fails
PARTIAL = 10  # bytes of the reserve's reply let through before the rest is held back
_INCOMPLETE = object()


class ReplyGate:
    """A TCP proxy to Redis that, once armed, lets the next whole reply through, then `PARTIAL`
    bytes of the one after it, and holds back the rest until `let_through`. It is armed while
    one connection alone is busy (the driver's blocking one)."""

    def __init__(self, target_url: str) -> None:
        target = urlsplit(target_url)
        self._target = (target.hostname or "127.0.0.1", target.port or 6379)
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: list[asyncio.StreamWriter] = []
        self._first: Any = None  # finds where the first reply ends, once armed
        self._first_ended = False
        self._allowance = 0  # bytes of the second reply still to let through
        self._held = bytearray()
        self._held_for: asyncio.StreamWriter | None = None
        self.holding = asyncio.Event()  # part of the second reply is held back

    async def start(self) -> str:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        return f"redis://127.0.0.1:{port}/0"

    def hold_second_reply(self) -> None:
        self._first = hiredis.Reader(notEnoughData=_INCOMPLETE)
        self._first_ended = False
        self._allowance = PARTIAL

    def let_through(self) -> None:
        self._first = None
        if self._held_for is not None:
            self._held_for.write(bytes(self._held))
        self._held.clear()
        self._held_for = None

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for writer in self._writers:
            writer.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    async def _serve(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        self._writers.append(client_w)
        upstream_r, upstream_w = await asyncio.open_connection(*self._target)
        self._writers.append(upstream_w)
        requests = self._pump(client_r, upstream_w, gated=False)
        replies = self._pump(upstream_r, client_w, gated=True)
        for pump in (requests, replies):
            task = asyncio.ensure_future(pump)
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _pump(
        self, source: asyncio.StreamReader, sink: asyncio.StreamWriter, *, gated: bool
    ) -> None:
        with contextlib.suppress(OSError):
            while data := await source.read(65536):
                passed = self._pass(data, sink) if gated else data
                sink.write(passed)
                await sink.drain()
        sink.close()

    def _pass(self, data: bytes, sink: asyncio.StreamWriter) -> bytes:
        """The part of ``data`` let through now; the rest is held back."""
        if self._first is None:
            return data
        if self._held_for is not None:
            self._held += data
            return b""
        cut = 0
        while not self._first_ended and cut < len(data):
            self._first.feed(data[cut : cut + 1])
            cut += 1
            self._first_ended = self._first.gets() is not _INCOMPLETE
        if not self._first_ended:  # the first reply goes on in the next read
            return data
        take = min(self._allowance, len(data) - cut)
        self._allowance -= take
        cut += take
        if self._allowance == 0:
            self._held += data[cut:]
            self._held_for = sink
            self.holding.set()
        return data[:cut]


class ReadsOfAReply:
    """Counts a connection's reads of replies, passing each through; `second` is set as the read of
    the second reply (the reserve's, behind the BLPOP's) begins."""

    def __init__(self, read: Callable[..., Awaitable[Any]]) -> None:
        self._read = read
        self._count = 0
        self.second = asyncio.Event()

    async def __call__(self, *args: Any, **kwargs: Any) -> Any:
        self._count += 1
        if self._count == 2:
            self.second.set()
        return await self._read(*args, **kwargs)


def stored(config: QueueConfig) -> tuple[list[str], list[str], dict[str, int]]:
    """The queue's ready ids, leased ids and attempts, read straight from Redis."""
    keys = QueueKeys.of(config.redis_prefix, config.queue_name)
    client = redis.Redis.from_url(config.redis_url, decode_responses=True)
    try:
        ready: list[str] = client.lrange(keys.ready, 0, -1)  # type: ignore[assignment]
        leased: list[str] = client.zrange(keys.reserved, 0, -1)  # type: ignore[assignment]
        attempts: dict[str, str] = client.hgetall(keys.attempts)  # type: ignore[assignment]
    finally:
        client.close()
    return ready, leased, {job_id: int(n) for job_id, n in attempts.items()}


def wake_up(driver: RedisDriver, config: QueueConfig) -> asyncio.Task[Batch]:
    """A wake-up in a task of its own, as the worker's idle wait runs it."""
    return asyncio.ensure_future(
        driver.wait_and_reserve(config.queue_name, WAIT_S, 10, lease_s=60, default_tries=3)
    )


async def put_back(driver: RedisDriver, wake: asyncio.Task[Batch]) -> list[str]:
    """What the worker does with a wake-up it cut short: wait for it (bounded), then release
    whatever it reserved with the attempt given back. The ids put back."""
    await asyncio.wait([wake], timeout=BOUND_S)
    if not wake.done() or wake.cancelled() or wake.exception() is not None:
        return []
    jobs = wake.result().jobs
    for item in jobs:
        assert await driver.release(item, delay_s=0, refund=True)
    return [item.job_id for item in jobs]


def test_a_wake_up_cancelled_after_its_reserve_ran_hands_back_what_it_leased(
    config: QueueConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    job_id = Queue.dispatch(config, Record(ledger="-"))  # its wake-up token ends the BLPOP at once

    async def scenario() -> tuple[bool, list[str], tuple[Any, ...]]:
        gate = ReplyGate(config.redis_url)
        driver = RedisDriver(await gate.start(), prefix=config.redis_prefix)
        try:
            blocking = await driver._blocking_client(WAIT_S, config.queue_name)
            await blocking.initialize()  # its greeting replies go through before the gate is armed
            connection = blocking.connection
            assert connection is not None
            reads = ReadsOfAReply(connection.read_response)
            monkeypatch.setattr(connection, "read_response", reads)
            gate.hold_second_reply()

            wake = wake_up(driver, config)
            await asyncio.wait_for(gate.holding.wait(), BOUND_S)
            await asyncio.wait_for(reads.second.wait(), BOUND_S)
            # The reserve has run and its reply is half read: the worker is asked to stop now.
            while_held = stored(config)
            wake.cancel()
            gate.let_through()
            put_back_ids = await put_back(driver, wake)
            return wake.cancelled(), put_back_ids, while_held
        finally:
            await driver.close()
            await gate.close()

    cancelled, put_back_ids, while_held = asyncio.run(scenario())
    assert while_held == ([], [job_id], {job_id: 1})
    assert not cancelled, "the wake-up was cancelled with its reserved job unread"
    assert put_back_ids == [job_id]
    assert stored(config) == ([job_id], [], {job_id: 0})  # ready again, no attempt spent


def test_a_wake_up_cancelled_while_blpop_blocks_reserves_nothing(config: QueueConfig) -> None:
    async def scenario() -> tuple[bool, bool, list[str]]:
        driver = RedisDriver(config.redis_url, prefix=config.redis_prefix)
        watcher = redis.asyncio.Redis.from_url(config.redis_url, decode_responses=True)
        try:
            blocking = await driver._blocking_client(WAIT_S, config.queue_name)
            client_id = await blocking.client_id()
            wake = wake_up(driver, config)
            await until(lambda: blocked_in_blpop(watcher, client_id))
            wake.cancel()
            await asyncio.wait([wake], timeout=BOUND_S)
            cancelled = wake.cancelled()
            # The connection is dropped, and the BLPOP with it: a push now wakes nobody there.
            await until(lambda: gone(watcher, client_id))
            dropped = not driver._blocking
            job_id = Queue.dispatch(config, Record(ledger="-"))
            assert stored(config) == ([job_id], [], {})
            # The driver blocks again on a new connection, and that wake-up takes the job.
            batch = await asyncio.wait_for(wake_up(driver, config), BOUND_S)
            return cancelled, dropped, [job_id, *(item.job_id for item in batch.jobs)]
        finally:
            await watcher.aclose()
            await driver.close()

    cancelled, dropped, (job_id, *taken) = asyncio.run(scenario())
    assert cancelled
    assert dropped
    assert taken == [job_id]


async def blocked_in_blpop(watcher: redis.asyncio.Redis, client_id: int) -> bool:
    clients = await watcher.client_list(client_id=[client_id])
    return bool(clients) and "b" in clients[0]["flags"] and clients[0]["cmd"] == "blpop"


async def gone(watcher: redis.asyncio.Redis, client_id: int) -> bool:
    return not await watcher.client_list(client_id=[client_id])


async def until(condition: Callable[[], Awaitable[bool]]) -> None:
    """Return once ``condition`` holds; fail the test if it does not within `BOUND_S`."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + BOUND_S
    while not await condition():
        assert loop.time() < deadline, "the condition did not hold in time"
        await asyncio.sleep(0.01)
