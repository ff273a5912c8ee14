"""The Redis backend: crash-safe leases, atomic moves in Lua, Redis server time.

This module is the worker's asyncio `RedisDriver`, and the two functions the registry calls
(`open_producer`, `open_driver`). The keys and script calls both sides send are in `redis_keys`
(with the layout of a queue); the blocking producer and lease keeper are in `redis_producer`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from typing import Any

import redis
import redis.asyncio as aioredis
from redis.backoff import ExponentialWithJitterBackoff

from runequeue.config import QueueConfig
from runequeue.drivers.base import (
    Batch,
    BatchStore,
    Buried,
    Control,
    Driver,
    LeaseKeeper,
    Limits,
    Outgoing,
    Producer,
    QueueCounts,
    Reserved,
)
from runequeue.drivers.held import Fallback
from runequeue.drivers.redis_async_line import AsyncScriptLine
from runequeue.drivers.redis_control import RedisControl
from runequeue.drivers.redis_direct import Call
from runequeue.drivers.redis_errors import mapped_errors, redacted
from runequeue.drivers.redis_keys import (
    PUSH_CHUNK,
    KeyCache,
    LeasesByQueue,
    QueueKeys,
    ScriptArg,
    ack_keys,
    ack_then_keys,
    as_text,
    batch_keys,
    bury_keys,
    claim_hook_keys,
    clear_keys,
    count_jobs,
    follower_args,
    lua_source,
    push_calls,
    push_unique_call,
    push_unique_source,
    release_keys,
    reserve_call,
    reserved_batch,
    total,
    unique_holder,
    unique_lock_key,
    with_helpers,
)
from runequeue.drivers.redis_limits import RedisLimits
from runequeue.drivers.redis_producer import RedisLeaseKeeper, RedisProducer
from runequeue.errors import DispatchError, DriverError, DriverUnavailable
from runequeue.failure_reasons import HOOK_CLAIMED
from runequeue.payload import DEFAULT_MAX_BYTES

# The driver, the registry's two functions, and names importers still take from here, where
# they were defined before the module was split.
__all__ = [
    "PUSH_CHUNK",
    "QueueKeys",
    "RedisDriver",
    "RedisLeaseKeeper",
    "RedisProducer",
    "open_driver",
    "open_producer",
]

# The share of maxmemory past which a worker warns at start that Redis will soon refuse jobs.
NEARLY_FULL = 0.9


def _block(timeout_s: float) -> float:
    # BLPOP takes whole and fractional seconds; 0 would block forever.
    return max(round(timeout_s, 3), 0.01)


class RedisDriver:
    """The worker's asyncio access to Redis."""

    def __init__(
        self,
        url: str,
        *,
        prefix: str = "queues",
        timeout_s: float = 5.0,
        max_payload_bytes: int = DEFAULT_MAX_BYTES,
    ) -> None:
        self.url = url
        self.prefix = prefix
        self.timeout_s = timeout_s
        self.max_payload_bytes = max_payload_bytes
        self.keys = KeyCache(prefix)
        # The worker retries broker errors itself, with back-off and forever; one quick retry
        # here only smooths over a connection the server closed while idle.
        self.client = aioredis.Redis.from_url(
            url,
            socket_connect_timeout=timeout_s,
            socket_timeout=timeout_s,
            retry=aioredis.retry.Retry(ExponentialWithJitterBackoff(cap=0.5, base=0.05), 1),
        )
        # BLPOP gets a connection of its own: a blocked call must not hold up acks and reserves.
        self._blocking: aioredis.Redis | None = None
        self._push = self.client.register_script(lua_source("push"))
        # A single dispatch's EVALSHA: concurrent ones from this event loop share round trips.
        self._push_line = AsyncScriptLine(self.client, lua_source("push"))
        self._reserve = self.client.register_script(lua_source("reserve"))
        self._ack = self.client.register_script(lua_source("ack"))
        self._ack_then = self.client.register_script(with_helpers("ack_then"))
        self._push_unique = self.client.register_script(push_unique_source())
        self._unlock = self.client.register_script(lua_source("unlock"))
        self._release = self.client.register_script(lua_source("release"))
        self._bury = self.client.register_script(with_helpers("bury"))
        self._clear = self.client.register_script(lua_source("clear"))
        self._claim_hook = self.client.register_script(lua_source("claim_hook"))
        self._producer: RedisProducer | None = None  # for `batches`, opened on first use
        # Set when Redis answered READONLY (a failover demoted it): the next reserve reconnects.
        self._demoted = False

    def _errors(self) -> contextlib.AbstractContextManager[None]:
        return mapped_errors(self.url, on_read_only=self._mark_demoted)

    def _mark_demoted(self) -> None:
        self._demoted = True

    async def _reconnect_if_demoted(self) -> None:
        """Drop every connection to a server that turned out to be a replica: the next ones go to
        wherever the URL leads now. The worker never runs a job it could not acknowledge there:
        reserve itself is refused by a replica."""
        if self._demoted:
            self._demoted = False
            await self._drop_blocking()
            await self.client.connection_pool.disconnect()

    async def push(self, items: Sequence[Outgoing]) -> int:
        """One round trip: a single EVALSHA, or, past `PUSH_CHUNK` jobs or one queue, the chunked
        calls in one MULTI/EXEC (all or nothing, as `RedisProducer.push`). redis-py's script
        objects would send SCRIPT EXISTS first each time: NOSCRIPT is handled here instead."""
        calls = push_calls(self.keys, items)
        try:
            with self._errors():
                try:
                    return await self._push_once(calls)
                except redis.exceptions.NoScriptError:
                    # Redis lost its scripts (a restart, SCRIPT FLUSH). Every call of a
                    # transaction runs the same script, so none of them stored anything.
                    await self.client.script_load(self._push.script)
                    return await self._push_once(calls)
        except DriverError as exc:
            raise DispatchError(f"could not dispatch: {exc}") from exc

    async def _push_once(self, calls: Sequence[Call]) -> int:
        sha = self._push.sha
        if len(calls) == 1:
            keys, args = calls[0]
            try:
                return int(await self._push_line.call(keys, args))
            except Fallback:  # the client repeats it, with its retries (see `AsyncScriptLine`)
                return int(await self.client.evalsha(sha, len(keys), *keys, *args))
        async with self.client.pipeline(transaction=True) as pipe:
            for keys, args in calls:
                pipe.evalsha(sha, len(keys), *keys, *args)
            return total(await pipe.execute())

    def _reserve_call(
        self, queue: str, count: int, lease_s: float, default_tries: int, alone: bool
    ) -> tuple[list[str], list[ScriptArg], str]:
        return reserve_call(
            self.keys(queue), count, lease_s=lease_s, default_tries=default_tries, alone=alone,
            max_payload_bytes=self.max_payload_bytes,
        )  # fmt: skip

    async def reserve(
        self, queue: str, count: int, *, lease_s: float, default_tries: int, alone: bool = False
    ) -> Batch:
        await self._reconnect_if_demoted()
        keys, args, token = self._reserve_call(queue, count, lease_s, default_tries, alone)
        with self._errors():
            reply = await self._reserve(keys=keys, args=args)
        return reserved_batch(queue, reply, token)

    async def recover(self, queue: str, *, default_tries: int) -> None:
        await self.reserve(queue, 0, lease_s=1, default_tries=default_tries)

    def _blocking_client(self, timeout_s: float) -> aioredis.Redis:
        if self._blocking is None:
            self._blocking = aioredis.Redis.from_url(
                self.url,
                socket_connect_timeout=self.timeout_s,
                # A blocking call that never settles (a half-open socket) is torn down.
                socket_timeout=timeout_s + self.timeout_s,
                single_connection_client=True,
            )
        return self._blocking

    async def wait(self, queues: Sequence[str], timeout_s: float) -> None:
        client = self._blocking_client(timeout_s)
        try:
            with self._errors():
                await client.blpop([self.keys(q).notify for q in queues], timeout=_block(timeout_s))
        except DriverUnavailable:
            await self._drop_blocking()
            raise

    async def wait_and_reserve(
        self,
        queue: str,
        timeout_s: float,
        count: int,
        *,
        lease_s: float,
        default_tries: int,
        alone: bool = False,
    ) -> Batch:
        """`wait`, then `reserve`, in one round trip: the reserve is pipelined behind the BLPOP,
        so Redis runs it the moment a job wakes the worker (one round trip saved per wake-up).

        Cancelled while BLPOP still blocks, the call is cancelled and nothing was reserved.
        Cancelled later, once Redis has run the reserve, it is not: the reserve's reply is read to
        the end and its batch returned, so the caller can put back the jobs it leased (the
        worker's `_put_back_orphans`) instead of leaving them to wait out their lease."""
        await self._reconnect_if_demoted()
        client = self._blocking_client(timeout_s)
        keys, args, token = self._reserve_call(queue, count, lease_s, default_tries, alone)
        blpop = ("BLPOP", self.keys(queue).notify, _block(timeout_s))
        evalsha = ("EVALSHA", self._reserve.sha, len(keys), *keys, *args)
        try:
            with self._errors():
                try:
                    reply = await self._blpop_then_reserve(client, blpop, evalsha)
                except redis.exceptions.NoScriptError:
                    reply = None  # Redis lost its scripts (a restart); both replies were read
        except BaseException:
            # A reply may still be unread on it (cancelled mid-wait): never reuse it.
            await self._drop_blocking()
            raise
        if reply is None:  # the plain reserve loads the script again
            return await self.reserve(
                queue, count, lease_s=lease_s, default_tries=default_tries, alone=alone
            )
        return reserved_batch(queue, reply, token)

    @staticmethod
    async def _blpop_then_reserve(
        client: aioredis.Redis, blpop: tuple[ScriptArg, ...], evalsha: tuple[ScriptArg, ...]
    ) -> Any:
        # Straight on the connection, not through a pipeline object: this is the path of every
        # wake-up, and redis-py's pipeline machinery cost ~0.1 ms of it.
        await client.initialize()
        connection = client.connection
        if connection is None:  # initialize() gives a single-connection client one
            raise DriverError("the Redis client opened no connection")
        await connection.send_packed_command(
            connection.pack_commands([blpop, evalsha]), check_health=False
        )
        # Cancelled here, BLPOP still blocks and the reserve behind it has not run: the caller
        # drops the connection, and Redis drops both commands with it.
        await connection.read_response()
        # From here Redis has run the reserve (it was next on this connection), and its reply
        # carries the jobs it leased: a cancel now must not drop them with the connection, where
        # they would wait out their lease with an attempt spent. So the read is not torn down by
        # a cancel (redis-py keeps what it has read of a reply it was interrupted in, to parse it
        # again), and is taken up again to the end; a second cancel gives up on the reply and
        # the connection. (A task under asyncio.shield would cost every wake-up ~15 µs more.)
        try:
            return await connection.read_response(disconnect_on_error=False)
        except asyncio.CancelledError:
            return await connection.read_response()

    async def _drop_blocking(self) -> None:
        client, self._blocking = self._blocking, None
        if client is not None:
            with contextlib.suppress(Exception):
                await client.aclose()

    async def ack(self, items: Sequence[Reserved]) -> list[bool]:
        leases = LeasesByQueue.of(items)
        with self._errors():
            replies = [
                await self._ack(keys=ack_keys(self.keys(queue)), args=pairs)
                for queue, pairs in leases.pairs.items()
            ]
        return leases.flags(replies)

    async def release(self, item: Reserved, *, delay_s: float, refund: bool) -> bool:
        keys = release_keys(self.keys(item.queue))
        args: list[ScriptArg] = [item.job_id, item.token, int(delay_s * 1000), int(refund)]
        with self._errors():
            return bool(await self._release(keys=keys, args=args))

    async def push_unique(self, item: Outgoing) -> str:
        keys, args = push_unique_call(self.keys, item)
        try:
            with self._errors():
                reply = await self._push_unique(keys=keys, args=args)
        except DriverError as exc:
            raise DispatchError(f"could not dispatch: {exc}") from exc
        return unique_holder(reply, item)

    async def unlock(self, queue: str, unique_key: str, job_id: str) -> None:
        with self._errors():
            await self._unlock(keys=[unique_lock_key(self.keys(queue), unique_key)], args=[job_id])

    async def ack_then(
        self, item: Reserved, then: Sequence[Outgoing], batch: str | None = None
    ) -> bool:
        k = self.keys(item.queue)
        keys = ack_then_keys(k) + (batch_keys(k, batch) if batch is not None else [])
        args = [item.job_id, item.token, *follower_args(item, then)]
        with self._errors():
            return bool(await self._ack_then(keys=keys, args=args))

    async def bury(
        self,
        item: Reserved,
        error: str,
        then: Sequence[Outgoing] = (),
        batch: str | None = None,
    ) -> bool:
        k = self.keys(item.queue)
        keys = bury_keys(k) + (batch_keys(k, batch) if batch is not None else [])
        args = [item.job_id, item.token, error, *follower_args(item, then)]
        with self._errors():
            reply = await self._bury(keys=keys, args=args)
        return bool(reply)

    async def buried(self, queue: str, limit: int) -> list[Buried]:
        k = self.keys(queue)
        with self._errors():
            ids = [as_text(raw) for raw in await self.client.zrange(k.dead, 0, limit - 1)]
            if not ids:
                return []
            async with self.client.pipeline(transaction=False) as pipe:
                pipe.hmget(k.payload, ids)
                pipe.hmget(k.errors, ids)
                payloads, errors = await pipe.execute()
        # An id whose payload is gone was recorded and purged by its worker since ZRANGE: skip it,
        # or it would be recorded again, empty, over the real record.
        return [
            Buried(queue, job_id, raw, (error or b"").decode(errors="replace"))
            for job_id, raw, error in zip(ids, payloads, errors, strict=True)
            if raw is not None
        ]

    async def purge(self, queue: str, job_id: str) -> None:
        k = self.keys(queue)
        with self._errors():
            async with self.client.pipeline(transaction=True) as pipe:
                pipe.zrem(k.dead, job_id)
                for key in (k.payload, k.attempts, k.tries, k.token, k.errors):
                    pipe.hdel(key, job_id)
                await pipe.execute()

    async def claim_failed_hook(self, queue: str, job_id: str) -> bool:
        keys = claim_hook_keys(self.keys(queue))
        with self._errors():
            return bool(await self._claim_hook(keys=keys, args=[job_id, HOOK_CLAIMED]))

    async def size(self, queue: str) -> int:
        with self._errors():
            async with self.client.pipeline(transaction=False) as pipe:
                count_jobs(pipe, self.keys(queue))
                return total(await pipe.execute())

    async def counts(self, queue: str) -> QueueCounts:
        with self._errors():
            async with self.client.pipeline(transaction=False) as pipe:
                count_jobs(pipe, self.keys(queue))
                ready, recovered, delayed, reserved = (int(n) for n in await pipe.execute())
        return QueueCounts(ready=ready + recovered, delayed=delayed, reserved=reserved)

    async def clear(self, queue: str) -> int:
        with self._errors():
            return int(await self._clear(keys=clear_keys(self.keys(queue))))

    async def check(self) -> list[str]:
        """Warn when Redis could lose queued jobs: no persistence, an evicting memory policy, or
        TLS without certificate checks."""
        warnings = []
        if "ssl_cert_reqs=none" in self.url.lower():
            warnings.append(f"TLS certificate verification is off for {redacted(self.url)}")
        with self._errors():
            settings = await self._settings()
        if settings.get("appendonly", "no") != "yes":
            lost = (
                "every queued job" if not settings.get("save") else "jobs since its last snapshot"
            )
            warnings.append(
                f"Redis at {redacted(self.url)} has no append-only file: a restart loses {lost} "
                "(set appendonly yes, appendfsync everysec)"
            )
        policy = settings.get("maxmemory-policy", "noeviction")
        if policy != "noeviction":
            warnings.append(
                f"Redis at {redacted(self.url)} evicts keys when full (maxmemory-policy {policy}): "
                "it may delete queued jobs (set noeviction)"
            )
        with self._errors():
            nearly_full = await self._memory_warning()
        if nearly_full:
            warnings.append(nearly_full)
        return warnings

    async def _memory_warning(self) -> str | None:
        """A warning when Redis is close to ``maxmemory``, where it refuses new jobs."""
        try:
            memory = await self.client.info("memory")
        except redis.ResponseError:  # INFO denied by an ACL: nothing to say
            return None
        used, limit = int(memory.get("used_memory", 0)), int(memory.get("maxmemory", 0))
        if not limit or used < NEARLY_FULL * limit:
            return None
        return (
            f"Redis at {redacted(self.url)} uses {used / 2**20:.1f} MiB of its maxmemory "
            f"{limit / 2**20:.1f} MiB ({used / limit:.0%}): when full it refuses new jobs "
            "(dispatch fails with 'out of memory') while workers go on; raise maxmemory or free "
            "memory"
        )

    async def _settings(self) -> dict[str, str]:
        try:
            reply = await self.client.config_get("appendonly", "save", "maxmemory-policy")
            return {as_text(k): as_text(v) for k, v in reply.items()}
        except redis.ResponseError:  # CONFIG denied by an ACL: INFO says enough
            persistence = await self.client.info("persistence")
            memory = await self.client.info("memory")
            return {
                "appendonly": "yes" if persistence.get("aof_enabled") else "no",
                "save": "",
                "maxmemory-policy": str(memory.get("maxmemory_policy", "noeviction")),
            }

    def lease_keeper(self) -> LeaseKeeper:
        return RedisLeaseKeeper(self.url, prefix=self.prefix, timeout_s=self.timeout_s)

    def limits(self) -> Limits:
        return RedisLimits(self.client, self.prefix, self._errors)

    def control(self) -> Control:
        return RedisControl(self.client, self.prefix, self._errors)

    def batches(self) -> BatchStore:
        if self._producer is None:
            self._producer = RedisProducer(self.url, prefix=self.prefix, timeout_s=self.timeout_s)
        return self._producer.batches()

    async def close(self) -> None:
        await self._drop_blocking()
        await self._push_line.close()
        await self.client.aclose()
        if self._producer is not None:
            self._producer.close()


_driver_check: type[Driver] = RedisDriver


def open_producer(config: QueueConfig) -> Producer:
    return RedisProducer(
        config.redis_url, prefix=config.redis_prefix, timeout_s=config.dispatch_timeout_s
    )


def open_driver(config: QueueConfig) -> Driver:
    return RedisDriver(
        config.redis_url, prefix=config.redis_prefix, max_payload_bytes=config.max_payload_bytes
    )
