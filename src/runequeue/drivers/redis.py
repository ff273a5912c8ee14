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
import redis.asyncio.cluster as aiocluster
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
from runequeue.drivers.redis_connect import (
    AsyncClient,
    RedisTarget,
    aclose,
    async_client,
    async_single_connection,
    parse,
)
from runequeue.drivers.redis_control import RedisControl
from runequeue.drivers.redis_direct import Call
from runequeue.drivers.redis_errors import (
    cluster_node_advice,
    mapped_errors,
    not_a_cluster,
    redacted,
)
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
from runequeue.errors import ConfigError, DispatchError, DriverError, DriverUnavailable
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
        self.target: RedisTarget = parse(url)
        self.keys = KeyCache(prefix, cluster=self.target.cluster)
        # The worker retries broker errors itself, with back-off and forever; one quick retry
        # here only smooths over a connection the server closed while idle.
        self.client: AsyncClient = async_client(
            self.target,
            socket_connect_timeout=timeout_s,
            socket_timeout=timeout_s,
            retry=aioredis.retry.Retry(ExponentialWithJitterBackoff(cap=0.5, base=0.05), 1),
        )
        # BLPOP gets a connection of its own: a blocked call must not hold up acks and reserves.
        # On a Cluster, one per queue, to the master of its slot (keyed by queue; else by None).
        self._blocking: dict[str | None, aioredis.Redis] = {}
        self._push = self.client.register_script(lua_source("push"))
        # A single dispatch's EVALSHA: concurrent ones from this event loop share round trips.
        # On a Cluster each queue's calls go to its own node: redis-py's client routes them.
        self._push_line = (
            AsyncScriptLine(self.client, lua_source("push"))
            if isinstance(self.client, aioredis.Redis)
            else None
        )
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
            if isinstance(self.client, aioredis.Redis):  # a Cluster client follows by itself
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
            if self._push_line is not None:
                with contextlib.suppress(Fallback):  # then the client repeats it, with retries
                    return int(await self._push_line.call(keys, args))
            return int(await self.client.evalsha(sha, len(keys), *keys, *args))
        if self.target.cluster:  # one call per queue, each all or nothing (`push_calls`)
            return total([await self.client.evalsha(sha, len(k), *k, *a) for k, a in calls])
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

    def _blocking_slot(self, queue: str | None) -> str | None:
        return queue if self.target.cluster else None

    async def _blocking_client(self, timeout_s: float, queue: str) -> aioredis.Redis:
        slot = self._blocking_slot(queue)
        client = self._blocking.get(slot)
        if client is None:
            node = None
            if isinstance(self.client, aiocluster.RedisCluster):
                with self._errors():
                    await self.client.initialize()
                    master = self.client.get_node_from_key(self.keys(queue).notify)
                if master is None:
                    raise DriverUnavailable(f"no master holds queue {queue!r}'s slot now")
                node = (str(master.host), int(master.port))
            client = self._blocking[slot] = async_single_connection(
                self.target,
                node,
                socket_connect_timeout=self.timeout_s,
                # A blocking call that never settles (a half-open socket) is torn down.
                socket_timeout=timeout_s + self.timeout_s,
            )
        return client

    async def wait(self, queues: Sequence[str], timeout_s: float) -> None:
        if self.target.cluster and len(queues) > 1:
            # BLPOP takes keys of one slot only: one BLPOP per queue, the first to wake wins.
            waits = [asyncio.ensure_future(self.wait([queue], timeout_s)) for queue in queues]
            try:
                done, _ = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for waiting in waits:
                    waiting.cancel()
                await asyncio.gather(*waits, return_exceptions=True)
            for finished in done:
                finished.result()  # a broker error, raised as the single-queue wait raises it
            return
        client = await self._blocking_client(timeout_s, queues[0])
        try:
            with self._errors():
                await client.blpop([self.keys(q).notify for q in queues], timeout=_block(timeout_s))
        except BaseException:
            # Unavailable, or cancelled mid-wait (its reply unread): never reuse it.
            await self._drop_blocking(queues[0])
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
        client = await self._blocking_client(timeout_s, queue)
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
            await self._drop_blocking(queue)
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

    async def _drop_blocking(self, queue: str | None = None) -> None:
        """Close the blocking connection of ``queue`` (on a single server: the one there is), or
        every one."""
        everything = queue is None
        for slot in list(self._blocking) if everything else [self._blocking_slot(queue)]:
            client = self._blocking.pop(slot, None)
            if client is not None:
                with contextlib.suppress(Exception):
                    await aclose(client)

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
            # Not a transaction on a Cluster (redis-py's asyncio Cluster client has none before
            # 6): each command is idempotent, and one cut short is done again by the next purge.
            async with self.client.pipeline(transaction=not self.target.cluster) as pipe:
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
        TLS without certificate checks. On a Cluster, each master is asked."""
        warnings = []
        if "ssl_cert_reqs=none" in self.url.lower():
            warnings.append(f"TLS certificate verification is off for {redacted(self.url)}")
        with self._errors():
            await self._check_topology()
            servers = await self._servers()
            for where, node in servers:
                warnings += await self._server_warnings(where, node)
        return warnings

    async def _check_topology(self) -> None:
        """A plain URL that leads to a Cluster node would work for the queues that node holds
        and fail for the rest (MOVED), and a Cluster URL cannot work on a single server: refuse
        either at start (`ConfigError`), saying which URL to use."""
        if isinstance(self.client, aiocluster.RedisCluster):
            try:
                await self.client.initialize()
            except redis.exceptions.RedisClusterException as exc:
                if "Cluster mode is not enabled" in str(exc):
                    raise ConfigError(not_a_cluster(self.url, exc)) from exc
                raise  # unreachable for now: a warning, and the worker waits for it
            return
        try:
            cluster = await self.client.info("cluster")
        except redis.ResponseError:  # INFO denied by an ACL: dispatch would say MOVED
            return
        if int(cluster.get("cluster_enabled", 0)):
            raise ConfigError(cluster_node_advice(self.url))

    async def _servers(self) -> list[tuple[str, Any]]:
        """Where to ask about persistence and memory: the server, or each Cluster master (with
        the node to name in redis-py's ``target_nodes``)."""
        if isinstance(self.client, aiocluster.RedisCluster):
            return [(f"{redacted(self.url)} (node {node.name})", node)
                    for node in self.client.get_primaries()]  # fmt: skip
        return [(redacted(self.url), None)]

    async def _server_warnings(self, where: str, node: Any) -> list[str]:
        warnings = []
        settings = await self._settings(node)
        if settings.get("appendonly", "no") != "yes":
            lost = (
                "every queued job" if not settings.get("save") else "jobs since its last snapshot"
            )
            warnings.append(
                f"Redis at {where} has no append-only file: a restart loses {lost} "
                "(set appendonly yes, appendfsync everysec)"
            )
        policy = settings.get("maxmemory-policy", "noeviction")
        if policy != "noeviction":
            warnings.append(
                f"Redis at {where} evicts keys when full (maxmemory-policy {policy}): "
                "it may delete queued jobs (set noeviction)"
            )
        nearly_full = await self._memory_warning(where, node)
        if nearly_full:
            warnings.append(nearly_full)
        return warnings

    async def _ask(self, node: Any, command: str, *args: Any) -> Any:
        target = {} if node is None else {"target_nodes": node}
        return await self.client.execute_command(command, *args, **target)

    async def _memory_warning(self, where: str, node: Any) -> str | None:
        """A warning when Redis is close to ``maxmemory``, where it refuses new jobs."""
        try:
            memory = await self._ask(node, "INFO", "memory")
        except redis.ResponseError:  # INFO denied by an ACL: nothing to say
            return None
        used, limit = int(memory.get("used_memory", 0)), int(memory.get("maxmemory", 0))
        if not limit or used < NEARLY_FULL * limit:
            return None
        return (
            f"Redis at {where} uses {used / 2**20:.1f} MiB of its maxmemory "
            f"{limit / 2**20:.1f} MiB ({used / limit:.0%}): when full it refuses new jobs "
            "(dispatch fails with 'out of memory') while workers go on; raise maxmemory or free "
            "memory"
        )

    async def _settings(self, node: Any) -> dict[str, str]:
        try:
            reply = await self._ask(node, "CONFIG GET", "appendonly", "save", "maxmemory-policy")
            return {as_text(k): as_text(v) for k, v in reply.items()}
        except redis.ResponseError:  # CONFIG denied by an ACL: INFO says enough
            persistence = await self._ask(node, "INFO", "persistence")
            memory = await self._ask(node, "INFO", "memory")
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
        return RedisControl(self.client, self.prefix, self._errors, cluster=self.target.cluster)

    def batches(self) -> BatchStore:
        if self._producer is None:
            self._producer = RedisProducer(self.url, prefix=self.prefix, timeout_s=self.timeout_s)
        return self._producer.batches()

    async def close(self) -> None:
        await self._drop_blocking()
        if self._push_line is not None:
            await self._push_line.close()
        await aclose(self.client)
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
