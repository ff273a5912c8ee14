"""Blocking access to Redis: `RedisProducer` for dispatch, size and clear (`Queue` and the CLI),
and `RedisLeaseKeeper` for lease renewal (the worker's heartbeat thread)."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import Any

import redis
from redis.backoff import ExponentialWithJitterBackoff
from redis.retry import Retry

from runequeue.drivers.base import BatchStore, LeaseKeeper, Outgoing, Producer, Reserved
from runequeue.drivers.held import Fallback
from runequeue.drivers.redis_batches import RedisBatches
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
from runequeue.errors import DispatchError, DriverError


class RedisProducer:
    """Blocking dispatch, size and clear; fails within about ``timeout_s`` when Redis is down."""

    def __init__(self, url: str, *, prefix: str = "queues", timeout_s: float = 2.0) -> None:
        self.url = url
        self.keys = KeyCache(prefix)
        # Two quick retries of a refused or dropped connection, each bounded, so a dispatch
        # fails with DispatchError in about timeout_s instead of hanging the caller's request.
        retry = Retry(ExponentialWithJitterBackoff(cap=timeout_s / 8, base=0.05), retries=2)
        self.client = redis.Redis.from_url(
            url,
            socket_connect_timeout=timeout_s / 3,
            socket_timeout=timeout_s / 3,
            retry=retry,
        )
        self._push = self.client.register_script(lua_source("push"))
        self._push_line = ScriptLine(self.client, lua_source("push"))
        self._clear = self.client.register_script(lua_source("clear"))
        self._push_unique = self.client.register_script(push_unique_source())
        self._batches = RedisBatches(self.client, self.keys, self._errors)

    def _errors(self) -> contextlib.AbstractContextManager[None]:
        return mapped_errors(self.url, on_read_only=self.client.connection_pool.disconnect)

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
            replies = self._push_line.call_many(calls)
        except Fallback:
            replies = self._push_through_client(calls)
        # Each call's count of jobs stored. After a fallback, a job the direct path stored before
        # it failed is skipped by the repeat, and so not counted: it is queued all the same.
        return total(replies)

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
        self._push_line.close()
        self.client.close()


class RedisLeaseKeeper:
    """Lease renewal on its own blocking connection (the heartbeat thread's)."""

    def __init__(self, url: str, *, prefix: str, timeout_s: float) -> None:
        self.url = url
        self.keys = KeyCache(prefix)
        self.client = redis.Redis.from_url(
            url, socket_connect_timeout=timeout_s, socket_timeout=timeout_s
        )
        self._extend = self.client.register_script(lua_source("extend"))

    def _errors(self) -> contextlib.AbstractContextManager[None]:
        return mapped_errors(self.url, on_read_only=self.client.connection_pool.disconnect)

    def extend(self, items: Sequence[Reserved], lease_s: float) -> list[bool]:
        leases = LeasesByQueue.of(items)
        with self._errors(), self.client.pipeline(transaction=False) as pipe:
            for queue, pairs in leases.pairs.items():
                args: list[ScriptArg] = [int(lease_s * 1000), *pairs]
                self._extend(keys=extend_keys(self.keys(queue)), args=args, client=pipe)
            replies = pipe.execute()
        return leases.flags(replies)

    def close(self) -> None:
        self.client.close()


_producer_check: type[Producer] = RedisProducer
_keeper_check: type[LeaseKeeper] = RedisLeaseKeeper
