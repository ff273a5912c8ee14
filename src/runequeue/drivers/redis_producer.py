"""Blocking access to Redis: `RedisProducer` for dispatch, size and clear (`Queue` and the CLI),
and `RedisLeaseKeeper` for lease renewal (the worker's heartbeat thread)."""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Sequence
from typing import Any

import redis
import redis.cluster
from redis.backoff import ExponentialWithJitterBackoff
from redis.commands.core import Script
from redis.retry import Retry

from runequeue.drivers.base import BatchStore, LeaseKeeper, Outgoing, Producer, Reserved
from runequeue.drivers.held import Fallback
from runequeue.drivers.redis_batches import RedisBatches
from runequeue.drivers.redis_connect import SyncClient, parse, sync_client
from runequeue.drivers.redis_direct import Call, ScriptLine
from runequeue.drivers.redis_errors import mapped_errors
from runequeue.drivers.redis_keys import (
    KeyCache,
    LeasesByQueue,
    ScriptArg,
    clear_keys,
    count_jobs,
    extend_keys,
    lua_source,
    push_calls,
    push_unique_call,
    push_unique_source,
    total,
    unique_holder,
)
from runequeue.drivers.redis_transactions import Transactions
from runequeue.errors import DispatchError, DriverError


class RedisProducer:
    """Blocking dispatch, size and clear; fails within about ``timeout_s`` when Redis is down."""

    def __init__(self, url: str, *, prefix: str = "queues", timeout_s: float = 2.0) -> None:
        self.url = url
        self.target = parse(url)
        self.keys = KeyCache(prefix, cluster=self.target.cluster)
        self.timeout_s = timeout_s

    # Each made on first use: redis-py's Cluster client connects as it is made, and a producer
    # may be made while Redis is down (a failed attempt is made again at the next use).

    @functools.cached_property
    def client(self) -> SyncClient:
        # Two quick retries of a refused or dropped connection, each bounded, so a dispatch
        # fails with DispatchError in about timeout_s instead of hanging the caller's request.
        retry = Retry(ExponentialWithJitterBackoff(cap=self.timeout_s / 8, base=0.05), retries=2)
        with mapped_errors(self.url):
            return sync_client(
                self.target,
                socket_connect_timeout=self.timeout_s / 3,
                socket_timeout=self.timeout_s / 3,
                retry=retry,
            )

    @functools.cached_property
    def _push(self) -> Script:
        return self.client.register_script(lua_source("push"))

    @functools.cached_property
    def _push_line(self) -> ScriptLine | None:
        # On a Cluster each queue's calls go to its own node: redis-py's client routes them.
        client = self.client
        return ScriptLine(client, lua_source("push")) if isinstance(client, redis.Redis) else None

    @functools.cached_property
    def _clear(self) -> Script:
        return self.client.register_script(lua_source("clear"))

    @functools.cached_property
    def _push_unique(self) -> Script:
        return self.client.register_script(push_unique_source())

    @functools.cached_property
    def _batches(self) -> RedisBatches:
        return RedisBatches(self.client, self.keys, self._errors)

    def _errors(self) -> contextlib.AbstractContextManager[None]:
        return mapped_errors(self.url, on_read_only=lambda: disconnect(self.client))

    def push_unique(self, item: Outgoing) -> str:
        keys, args = push_unique_call(self.keys, item)
        try:
            with self._errors():
                reply = self._push_unique(keys=keys, args=args)
        except DriverError as exc:
            raise DispatchError(f"could not dispatch: {exc}") from exc
        return unique_holder(reply, item)

    def push(self, items: Sequence[Outgoing]) -> int:
        calls = push_calls(self.keys, items)
        try:
            line = self._push_line
        except DriverError as exc:
            raise DispatchError(f"could not dispatch: {exc}") from exc
        try:
            if line is None:
                raise Fallback("a Cluster: the client routes each call")
            replies = line.call_many(calls)
        except Fallback:
            replies = self._push_through_client(calls)
        # Each call's count of jobs stored. After a fallback, a job the direct path stored before
        # it failed is skipped by the repeat, and so not counted: it is queued all the same.
        return total(replies)

    def _push_through_client(self, calls: Sequence[Call]) -> list[Any]:
        replies: list[Any] = []
        try:
            # MULTI/EXEC for more than one call: Redis decides "out of memory" once, before EXEC,
            # for every script in it, so a batch is stored whole or not at all (R25). On a
            # Cluster there is one call per queue (`push_calls`), each whole or not at all.
            with self._errors():
                if len(calls) == 1 or self.target.cluster:
                    replies = [self._push(keys=keys, args=args) for keys, args in calls]
                else:
                    with self.client.pipeline(transaction=True) as pipe:
                        for keys, args in calls:
                            self._push(keys=keys, args=args, client=pipe)
                        replies = pipe.execute()
        except DriverError as exc:
            raise DispatchError(f"could not dispatch: {exc}") from exc
        return replies

    def batches(self) -> BatchStore:
        return self._batches

    def size(self, queue: str) -> int:
        with self._errors(), self.client.pipeline(transaction=False) as pipe:
            count_jobs(pipe, self.keys(queue))
            return total(pipe.execute())

    def clear(self, queue: str) -> int:
        with self._errors():
            return int(self._clear(keys=clear_keys(self.keys(queue))))

    def close(self) -> None:
        made = self.__dict__  # what was made: closing makes nothing
        if made.get("_push_line") is not None:
            made["_push_line"].close()
        if "client" in made:
            made["client"].close()


class RedisLeaseKeeper:
    """Lease renewal on its own blocking connection (the heartbeat thread's)."""

    def __init__(self, url: str, *, prefix: str, timeout_s: float) -> None:
        self.url = url
        self.target = parse(url)
        self.keys = KeyCache(prefix, cluster=self.target.cluster)
        self.timeout_s = timeout_s

    @functools.cached_property
    def client(self) -> SyncClient:
        """Made on first use, as `RedisProducer.client`: the worker starts while Redis is down."""
        with mapped_errors(self.url):
            return sync_client(
                self.target, socket_connect_timeout=self.timeout_s, socket_timeout=self.timeout_s
            )

    @functools.cached_property
    def _extend(self) -> Script:
        return self.client.register_script(lua_source("extend"))

    def _errors(self) -> contextlib.AbstractContextManager[None]:
        return mapped_errors(self.url, on_read_only=lambda: disconnect(self.client))

    @functools.cached_property
    def _pipelines(self) -> Transactions:
        return Transactions(self.client)

    def extend(self, items: Sequence[Reserved], lease_s: float) -> list[bool]:
        leases = LeasesByQueue.of(items)

        def fill(pipe: Any) -> None:
            for queue, pairs in leases.pairs.items():
                args: list[ScriptArg] = [int(lease_s * 1000), *pairs]
                self._extend(keys=extend_keys(self.keys(queue)), args=args, client=pipe)

        with self._errors():
            replies = self._pipelines.run([self._extend], fill, atomic=False)
        return leases.flags(replies)

    def close(self) -> None:
        if "client" in self.__dict__:
            self.__dict__["client"].close()


def disconnect(client: SyncClient) -> None:
    """Drop a server's connections (it turned out to be a replica): the next ones go to wherever
    the URL leads now, or the master the Sentinels name now. A Cluster client follows by itself."""
    if isinstance(client, redis.Redis):
        client.connection_pool.disconnect()


_producer_check: type[Producer] = RedisProducer
_keeper_check: type[LeaseKeeper] = RedisLeaseKeeper
