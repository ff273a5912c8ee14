"""The Redis driver: crash-safe leases, atomic moves in Lua, Redis server time.

Layout of one queue ``Q`` (every key carries the hash tag ``{Q}``, so a queue lives in one Redis
Cluster slot and every script declares all its keys; invariant 6):

    queues:{Q}            LIST  ids ready to run, FIFO
    queues:{Q}:delayed    ZSET  id -> due time (ms)
    queues:{Q}:reserved   ZSET  id -> lease deadline (ms); renewed by running workers
    queues:{Q}:payload    HASH  id -> envelope bytes
    queues:{Q}:attempts   HASH  id -> attempts so far (counted at reserve)
    queues:{Q}:tries      HASH  id -> max tries, when the job set one
    queues:{Q}:token      HASH  id -> token of the lease that holds it
    queues:{Q}:dead       ZSET  id -> time; failed jobs waiting to be recorded (outbox)
    queues:{Q}:errors     HASH  id -> why it failed
    queues:{Q}:notify     LIST  wake-up tokens for idle workers blocked in BLPOP

Each Lua script is a file in ``lua/`` whose header says what its KEYS and ARGV are.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import secrets
from collections.abc import Sequence
from importlib import resources
from typing import Any

import redis
import redis.asyncio as aioredis
from redis.backoff import ExponentialWithJitterBackoff
from redis.retry import Retry

from runequeue.config import QueueConfig
from runequeue.drivers.base import Batch, Buried, Driver, LeaseKeeper, Outgoing, Producer, Reserved
from runequeue.drivers.redis_direct import Call, Fallback, ScriptLine
from runequeue.drivers.redis_errors import mapped_errors, redacted
from runequeue.errors import DispatchError, DriverError, DriverUnavailable
from runequeue.failure_reasons import HOOK_CLAIMED
from runequeue.payload import DEFAULT_MAX_BYTES

# Expired leases and due delayed jobs handled per reserve call; the sweeper catches up the rest.
RECOVER_LIMIT = 100
# Jobs per push script call: a bulk dispatch is sent as calls of this many jobs in one MULTI/EXEC
# transaction, which keeps each script's arguments bounded. Redis runs the transaction as one
# command (about 3.5 µs a job), so a very large batch holds it for that long: the price of all or
# nothing (split a batch yourself where that matters; each call is atomic on its own).
PUSH_CHUNK = 1000
# The share of maxmemory past which a worker warns at start that Redis will soon refuse jobs.
NEARLY_FULL = 0.9


@dataclasses.dataclass(frozen=True, slots=True)
class QueueKeys:
    """Every Redis key of one queue."""

    ready: str
    delayed: str
    reserved: str
    payload: str
    attempts: str
    tries: str
    token: str
    dead: str
    errors: str
    notify: str
    recovered: str  # jobs whose worker died running them, waiting for a worker running nothing

    @classmethod
    def of(cls, prefix: str, queue: str) -> QueueKeys:
        base = f"{prefix}:{{{queue}}}"
        return cls(
            ready=base,
            delayed=f"{base}:delayed",
            reserved=f"{base}:reserved",
            payload=f"{base}:payload",
            attempts=f"{base}:attempts",
            tries=f"{base}:tries",
            token=f"{base}:token",
            dead=f"{base}:dead",
            errors=f"{base}:errors",
            notify=f"{base}:notify",
            recovered=f"{base}:recovered",
        )


@functools.cache
def _lua(name: str) -> str:
    return resources.files("runequeue.drivers").joinpath("lua", f"{name}.lua").read_text("utf-8")


ScriptArg = bytes | str | int | float


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _push_keys(k: QueueKeys) -> list[str]:
    return [k.ready, k.delayed, k.payload, k.tries, k.notify]


def _count_jobs(pipe: redis.client.Pipeline | aioredis.client.Pipeline, k: QueueKeys) -> None:
    """Queue on ``pipe`` the counts `size` adds up: ready, recovered, delayed and reserved."""
    pipe.llen(k.ready)
    pipe.llen(k.recovered)
    pipe.zcard(k.delayed)
    pipe.zcard(k.reserved)


def _clear_keys(k: QueueKeys) -> list[str]:
    """clear.lua's keys."""
    return [k.ready, k.delayed, k.reserved, k.payload, k.attempts, k.tries, k.token, k.notify,
            k.recovered]  # fmt: skip


def _push_calls(keys: _KeyCache, items: Sequence[Outgoing]) -> list[Call]:
    """One push script call per queue per `PUSH_CHUNK` jobs."""
    return [
        (_push_keys(keys(queue)), _push_args(group[start : start + PUSH_CHUNK]))
        for queue, group in _by_queue(items).items()
        for start in range(0, len(group), PUSH_CHUNK)
    ]


def _push_args(items: Sequence[Outgoing]) -> list[ScriptArg]:
    args: list[ScriptArg] = []
    for item in items:
        tries = "" if item.max_tries is None else item.max_tries
        args += (item.job_id, item.raw, int(item.delay_s * 1000), tries)
    return args


def _by_queue(items: Sequence[Outgoing]) -> dict[str, list[Outgoing]]:
    groups: dict[str, list[Outgoing]] = {}
    for item in items:
        groups.setdefault(item.queue, []).append(item)
    return groups


def _token_pairs(items: Sequence[Reserved]) -> list[str]:
    return [value for item in items for value in (item.job_id, item.token)]


def _positions_by_queue(items: Sequence[Reserved]) -> dict[str, list[int]]:
    groups: dict[str, list[int]] = {}
    for position, item in enumerate(items):
        groups.setdefault(item.queue, []).append(position)
    return groups


def _scatter(count: int, groups: dict[str, list[int]], replies: Sequence[Any]) -> list[bool]:
    """Per-item results, in the callers' order, from one script reply per queue group."""
    results = [False] * count
    for positions, reply in zip(groups.values(), replies, strict=True):
        for position, flag in zip(positions, reply, strict=True):
            results[position] = bool(flag)
    return results


def _block(timeout_s: float) -> float:
    # BLPOP takes whole and fractional seconds; 0 would block forever.
    return max(round(timeout_s, 3), 0.01)


def _batch(queue: str, reply: list[Any], token: str) -> Batch:
    """reserve.lua's reply: {next due ms, recovered jobs waiting, taken from them, jobs...}."""
    recovered = reply[2] == 1
    jobs = [
        Reserved(queue, _text(reply[i]), reply[i + 1], int(reply[i + 2]), token, recovered)
        for i in range(3, len(reply), 3)
    ]
    next_due_ms = int(reply[0])
    return Batch(jobs, None if next_due_ms < 0 else next_due_ms / 1000, int(reply[1]) > 0)


class _KeyCache:
    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self._keys: dict[str, QueueKeys] = {}

    def __call__(self, queue: str) -> QueueKeys:
        keys = self._keys.get(queue)
        if keys is None:
            keys = self._keys[queue] = QueueKeys.of(self.prefix, queue)
        return keys


class RedisProducer:
    """Blocking dispatch, size and clear; fails within about ``timeout_s`` when Redis is down."""

    def __init__(self, url: str, *, prefix: str = "queues", timeout_s: float = 2.0) -> None:
        self.url = url
        self.keys = _KeyCache(prefix)
        # Two quick retries of a refused or dropped connection, each bounded, so a dispatch
        # fails with DispatchError in about timeout_s instead of hanging the caller's request.
        retry = Retry(ExponentialWithJitterBackoff(cap=timeout_s / 8, base=0.05), retries=2)
        self.client = redis.Redis.from_url(
            url,
            socket_connect_timeout=timeout_s / 3,
            socket_timeout=timeout_s / 3,
            retry=retry,
        )
        self._push = self.client.register_script(_lua("push"))
        self._push_line = ScriptLine(self.client, _lua("push"))
        self._clear = self.client.register_script(_lua("clear"))

    def _errors(self) -> contextlib.AbstractContextManager[None]:
        return mapped_errors(self.url, on_read_only=self.client.connection_pool.disconnect)

    def push(self, items: Sequence[Outgoing]) -> int:
        calls = _push_calls(self.keys, items)
        try:
            replies = self._push_line.call_many(calls)
        except Fallback:
            replies = self._push_through_client(calls)
        # Each call's count of jobs stored. After a fallback, a job the direct path stored before
        # it failed is skipped by the repeat, and so not counted: it is queued all the same.
        return sum(int(stored) for stored in replies)

    def _push_through_client(self, calls: Sequence[Call]) -> list[Any]:
        try:
            # MULTI/EXEC for more than one call: Redis decides "out of memory" once, before EXEC,
            # for every script in it, so a batch is stored whole or not at all (R25).
            pipeline = self.client.pipeline(transaction=len(calls) > 1)
            with self._errors(), pipeline as pipe:
                for keys, args in calls:
                    self._push(keys=keys, args=args, client=pipe)
                return pipe.execute()
        except DriverError as exc:
            raise DispatchError(f"could not dispatch: {exc}") from exc

    def size(self, queue: str) -> int:
        k = self.keys(queue)
        with self._errors(), self.client.pipeline(transaction=False) as pipe:
            _count_jobs(pipe, k)
            return sum(int(n) for n in pipe.execute())

    def clear(self, queue: str) -> int:
        k = self.keys(queue)
        with self._errors():
            return int(self._clear(keys=_clear_keys(k)))

    def close(self) -> None:
        self._push_line.close()
        self.client.close()


class RedisLeaseKeeper:
    """Lease renewal on its own blocking connection (the heartbeat thread's)."""

    def __init__(self, url: str, *, prefix: str, timeout_s: float) -> None:
        self.url = url
        self.keys = _KeyCache(prefix)
        self.client = redis.Redis.from_url(
            url, socket_connect_timeout=timeout_s, socket_timeout=timeout_s
        )
        self._extend = self.client.register_script(_lua("extend"))

    def _errors(self) -> contextlib.AbstractContextManager[None]:
        return mapped_errors(self.url, on_read_only=self.client.connection_pool.disconnect)

    def extend(self, items: Sequence[Reserved], lease_s: float) -> list[bool]:
        groups = _positions_by_queue(items)
        with self._errors(), self.client.pipeline(transaction=False) as pipe:
            for queue, positions in groups.items():
                k = self.keys(queue)
                pairs = _token_pairs([items[i] for i in positions])
                args: list[ScriptArg] = [int(lease_s * 1000), *pairs]
                self._extend(keys=[k.reserved, k.token], args=args, client=pipe)
            replies = pipe.execute()
        return _scatter(len(items), groups, replies)

    def close(self) -> None:
        self.client.close()


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
        self.keys = _KeyCache(prefix)
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
        self._push = self.client.register_script(_lua("push"))
        self._reserve = self.client.register_script(_lua("reserve"))
        self._ack = self.client.register_script(_lua("ack"))
        self._release = self.client.register_script(_lua("release"))
        self._bury = self.client.register_script(_lua("bury"))
        self._clear = self.client.register_script(_lua("clear"))
        self._claim_hook = self.client.register_script(_lua("claim_hook"))
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
        calls = _push_calls(self.keys, items)
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
            return int(await self.client.evalsha(sha, len(keys), *keys, *args))
        async with self.client.pipeline(transaction=True) as pipe:
            for keys, args in calls:
                pipe.evalsha(sha, len(keys), *keys, *args)
            return sum(int(stored) for stored in await pipe.execute())

    def _reserve_call(
        self, queue: str, count: int, lease_s: float, default_tries: int, alone: bool
    ) -> tuple[list[str], list[ScriptArg], str]:
        k = self.keys(queue)
        keys = [
            k.ready, k.delayed, k.reserved, k.payload, k.attempts,
            k.tries, k.token, k.dead, k.errors, k.notify, k.recovered,
        ]  # fmt: skip
        token = secrets.token_hex(16)
        args: list[ScriptArg] = [
            count, int(lease_s * 1000), token, default_tries, RECOVER_LIMIT,
            self.max_payload_bytes, int(alone),
        ]  # fmt: skip
        return keys, args, token

    async def reserve(
        self, queue: str, count: int, *, lease_s: float, default_tries: int, alone: bool = False
    ) -> Batch:
        await self._reconnect_if_demoted()
        keys, args, token = self._reserve_call(queue, count, lease_s, default_tries, alone)
        with self._errors():
            reply = await self._reserve(keys=keys, args=args)
        return _batch(queue, reply, token)

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
        so Redis runs it the moment a job wakes the worker (one round trip saved per wake-up)."""
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
        return _batch(queue, reply, token)

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
        await connection.read_response()
        return await connection.read_response()

    async def _drop_blocking(self) -> None:
        client, self._blocking = self._blocking, None
        if client is not None:
            with contextlib.suppress(Exception):
                await client.aclose()

    async def ack(self, items: Sequence[Reserved]) -> list[bool]:
        groups = _positions_by_queue(items)
        with self._errors():
            replies = [
                await self._ack(
                    keys=self._ack_keys(queue), args=_token_pairs([items[i] for i in positions])
                )
                for queue, positions in groups.items()
            ]
        return _scatter(len(items), groups, replies)

    def _ack_keys(self, queue: str) -> list[str]:
        k = self.keys(queue)
        return [k.reserved, k.payload, k.attempts, k.tries, k.token]

    async def release(self, item: Reserved, *, delay_s: float, refund: bool) -> bool:
        k = self.keys(item.queue)
        keys = [k.ready, k.delayed, k.reserved, k.attempts, k.token, k.notify]
        args: list[ScriptArg] = [item.job_id, item.token, int(delay_s * 1000), int(refund)]
        with self._errors():
            return bool(await self._release(keys=keys, args=args))

    async def bury(self, item: Reserved, error: str) -> bool:
        k = self.keys(item.queue)
        with self._errors():
            reply = await self._bury(
                keys=[k.reserved, k.token, k.dead, k.errors], args=[item.job_id, item.token, error]
            )
        return bool(reply)

    async def buried(self, queue: str, limit: int) -> list[Buried]:
        k = self.keys(queue)
        with self._errors():
            ids = [_text(raw) for raw in await self.client.zrange(k.dead, 0, limit - 1)]
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
        k = self.keys(queue)
        with self._errors():
            return bool(await self._claim_hook(keys=[k.dead, k.token], args=[job_id, HOOK_CLAIMED]))

    async def size(self, queue: str) -> int:
        k = self.keys(queue)
        with self._errors():
            async with self.client.pipeline(transaction=False) as pipe:
                _count_jobs(pipe, k)
                return sum(int(n) for n in await pipe.execute())

    async def clear(self, queue: str) -> int:
        k = self.keys(queue)
        with self._errors():
            return int(await self._clear(keys=_clear_keys(k)))

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
            return {_text(k): _text(v) for k, v in reply.items()}
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

    async def close(self) -> None:
        await self._drop_blocking()
        await self.client.aclose()


_driver_check: type[Driver] = RedisDriver
_producer_check: type[Producer] = RedisProducer
_keeper_check: type[LeaseKeeper] = RedisLeaseKeeper


def open_producer(config: QueueConfig) -> Producer:
    return RedisProducer(
        config.redis_url, prefix=config.redis_prefix, timeout_s=config.dispatch_timeout_s
    )


def open_driver(config: QueueConfig) -> Driver:
    return RedisDriver(
        config.redis_url, prefix=config.redis_prefix, max_payload_bytes=config.max_payload_bytes
    )
