"""The Redis driver's keys, and its script calls built from them: pure, so the blocking producer
(`redis_producer`) and the asyncio driver (`redis`) send the same calls and read the same replies.

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
    queues:{Q}:recovered  LIST  jobs whose worker died running them
    queues:{Q}:unique:K   STRING  the id of the unique job holding lock K (expires)
    queues:{Q}:batch:B    HASH  batch B's record (lua/batch.lua lists its fields)
    queues:{Q}:batch:B:failed  SET  ids of batch B's jobs failed now

and, for finding a batch by its id alone (no atomic step touches them):

    queues:batches        ZSET  batch id -> created (ms)
    queues:batches:queue  HASH  batch id -> its queue

Each Lua script is a file in ``lua/`` whose header says what its KEYS and ARGV are; the key list
of each script is built here, once, in that order.
"""

from __future__ import annotations

import dataclasses
import functools
import secrets
from collections.abc import Sequence
from importlib import resources
from typing import Any

import redis
import redis.asyncio as aioredis
import redis.asyncio.cluster as aiocluster
import redis.cluster

from runequeue.drivers.base import Batch, Outgoing, Reserved
from runequeue.drivers.redis_direct import Call
from runequeue.errors import ConfigError

# Expired leases and due delayed jobs handled per reserve call; the sweeper catches up the rest.
RECOVER_LIMIT = 100
# Jobs per push script call: a bulk dispatch is sent as calls of this many jobs in one MULTI/EXEC
# transaction, which keeps each script's arguments bounded. Redis runs the transaction as one
# command (about 3.5 µs a job), so a very large batch holds it for that long: the price of all or
# nothing (split a batch yourself where that matters; each call is atomic on its own).
PUSH_CHUNK = 1000

ScriptArg = bytes | str | int | float
AnyPipeline = (
    redis.client.Pipeline
    | redis.cluster.ClusterPipeline
    | aioredis.client.Pipeline
    | aiocluster.ClusterPipeline
)


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


class KeyCache:
    """`QueueKeys` by queue name, built once per queue: every call names its queue's keys."""

    def __init__(self, prefix: str, *, cluster: bool = False) -> None:
        if cluster and ("{" in prefix or "}" in prefix):
            raise ConfigError(
                f"QUEUE_REDIS_PREFIX {prefix!r} has a brace: on a Redis Cluster the queue name "
                "is each key's hash tag, and a brace in the prefix would take its place"
            )
        self.prefix = prefix
        self.cluster = cluster
        self._keys: dict[str, QueueKeys] = {}

    def __call__(self, queue: str) -> QueueKeys:
        keys = self._keys.get(queue)
        if keys is None:
            check_queue_name(queue)
            keys = self._keys[queue] = QueueKeys.of(self.prefix, queue)
        return keys


def check_queue_name(queue: str) -> None:
    """Refuse a queue name with a brace: it would change which of its keys share a hash tag."""
    if "{" in queue or "}" in queue:
        raise ConfigError(
            f"queue name {queue!r} has a brace: on Redis a queue's name is the hash tag "
            "({name}) that keeps its keys in one Cluster slot; name it without { or }"
        )


@functools.cache
def lua_source(name: str) -> str:
    """The source of ``lua/<name>.lua``."""
    return resources.files("runequeue.drivers").joinpath("lua", f"{name}.lua").read_text("utf-8")


def with_helpers(name: str) -> str:
    """``lua/<name>.lua`` with the functions of followers.lua and batch.lua ahead of its code
    (after its ``#!lua`` flags line, which must stay first): ack_then, bury and batch_failed
    store followers and move batches alike."""
    flags, _, code = lua_source(name).partition("\n")
    return f"{flags}\n{lua_source('followers')}{lua_source('batch')}{code}"


def batch_add_source() -> str:
    """push.lua behind the batch prelude of batch_add.lua."""
    return lua_source("batch_add") + lua_source("push")


def push_unique_source() -> str:
    """push.lua behind the lock prelude of push_unique.lua: the push is written once."""
    return lua_source("push_unique") + lua_source("push")


def as_text(value: Any) -> str:
    """A reply value as text (redis-py hands back bytes)."""
    return value.decode() if isinstance(value, bytes) else str(value)


# Each script's KEYS, in the order of its header in lua/.


def push_keys(k: QueueKeys) -> list[str]:
    return [k.ready, k.delayed, k.payload, k.tries, k.notify]


def reserve_keys(k: QueueKeys) -> list[str]:
    return [k.ready, k.delayed, k.reserved, k.payload, k.attempts,
            k.tries, k.token, k.dead, k.errors, k.notify, k.recovered]  # fmt: skip


def extend_keys(k: QueueKeys) -> list[str]:
    return [k.reserved, k.token]


def ack_keys(k: QueueKeys) -> list[str]:
    return [k.reserved, k.payload, k.attempts, k.tries, k.token]


def release_keys(k: QueueKeys) -> list[str]:
    return [k.ready, k.delayed, k.reserved, k.attempts, k.token, k.notify]


def bury_keys(k: QueueKeys) -> list[str]:
    return [k.reserved, k.token, k.dead, k.errors, k.payload, k.tries, k.ready, k.notify]


def ack_then_keys(k: QueueKeys) -> list[str]:
    return [k.reserved, k.payload, k.attempts, k.tries, k.token, k.ready, k.notify]


def batch_keys(k: QueueKeys, batch_id: str) -> list[str]:
    """A batch's hash and its failed set, beside its queue's keys (same hash tag)."""
    base = f"{k.ready}:batch:{batch_id}"
    return [base, f"{base}:failed"]


def unique_lock_key(k: QueueKeys, unique_key: str) -> str:
    """The lock of a unique job, beside its queue's keys (same hash tag, same Cluster slot)."""
    return f"{k.ready}:unique:{unique_key}"


def push_unique_call(keys: KeyCache, item: Outgoing) -> Call:
    """The ``push_unique`` script call of one unique job (`PUSH_UNIQUE_SOURCE`)."""
    assert item.unique_key is not None
    k = keys(item.queue)
    lock_ms = max(int(item.unique_for_s * 1000), 1)
    return [*push_keys(k), unique_lock_key(k, item.unique_key)], [*_push_args([item]), lock_ms]


def unique_holder(reply: Any, item: Outgoing) -> str:
    """The id ``push_unique`` answered: the job holding the lock, or ``item``'s once stored."""
    return as_text(reply) if isinstance(reply, bytes | str) else item.job_id


def follower_args(item: Reserved, then: Sequence[Outgoing]) -> list[ScriptArg]:
    """``then`` as the groups of three that ``ack_then.lua`` and ``bury.lua`` take: followers go
    on the queue of the job they follow (a chain runs on one queue, one Cluster slot)."""
    args: list[ScriptArg] = []
    for job in then:
        if job.queue != item.queue:
            raise ValueError(f"job {job.job_id} follows {item.job_id} on another queue")
        args += (job.job_id, job.raw, "" if job.max_tries is None else job.max_tries)
    return args


def claim_hook_keys(k: QueueKeys) -> list[str]:
    return [k.dead, k.token]


def clear_keys(k: QueueKeys) -> list[str]:
    return [k.ready, k.delayed, k.reserved, k.payload, k.attempts, k.tries, k.token, k.notify,
            k.recovered]  # fmt: skip


# Dispatch.


def push_calls(keys: KeyCache, items: Sequence[Outgoing]) -> list[Call]:
    """One push script call per queue per `PUSH_CHUNK` jobs; on a Cluster, one per queue: a
    transaction cannot span nodes, and one call is all or nothing by itself (`RedisProducer.push`
    sends them one by one there)."""
    return [
        (push_keys(keys(queue)), _push_args(group[start : start + chunk]))
        for queue, group in _by_queue(items).items()
        for chunk in [len(group) if keys.cluster else PUSH_CHUNK]
        for start in range(0, len(group), chunk)
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


def total(replies: Sequence[Any]) -> int:
    """The sum of integer replies: jobs stored by push calls, or counted by `count_jobs`."""
    return sum(int(n) for n in replies)


# Size.


def count_jobs(pipe: AnyPipeline, k: QueueKeys) -> None:
    """Queue on ``pipe`` the counts a queue's size adds up (`total`): ready, recovered, delayed
    and reserved."""
    pipe.llen(k.ready)
    pipe.llen(k.recovered)
    pipe.zcard(k.delayed)
    pipe.zcard(k.reserved)


# Reserve.


def reserve_call(
    k: QueueKeys,
    count: int,
    *,
    lease_s: float,
    default_tries: int,
    alone: bool,
    max_payload_bytes: int,
) -> tuple[list[str], list[ScriptArg], str]:
    """reserve.lua's keys and arguments, and the new lease's token, which `reserved_batch` needs."""
    token = secrets.token_hex(16)
    args: list[ScriptArg] = [
        count, int(lease_s * 1000), token, default_tries, RECOVER_LIMIT, max_payload_bytes,
        int(alone),
    ]  # fmt: skip
    return reserve_keys(k), args, token


def reserved_batch(queue: str, reply: list[Any], token: str) -> Batch:
    """reserve.lua's reply: {next due ms, recovered jobs waiting, taken from them, jobs...}."""
    recovered = reply[2] == 1
    jobs = [
        Reserved(queue, as_text(reply[i]), reply[i + 1], int(reply[i + 2]), token, recovered)
        for i in range(3, len(reply), 3)
    ]
    next_due_ms = int(reply[0])
    return Batch(jobs, None if next_due_ms < 0 else next_due_ms / 1000, int(reply[1]) > 0)


# Leases held: ack (the driver) and extend (the lease keeper) take ``id, token`` pairs, one script
# call per queue, and answer one flag per pair.


@dataclasses.dataclass(frozen=True, slots=True)
class LeasesByQueue:
    """Leases grouped into one script call per queue, and the way back from those calls' replies
    to one flag per lease, in the caller's order."""

    count: int
    positions: dict[str, list[int]]  # queue -> where its leases are in the caller's sequence
    pairs: dict[str, list[str]]  # queue -> id, token, id, token, ...: the call's arguments

    @classmethod
    def of(cls, items: Sequence[Reserved]) -> LeasesByQueue:
        positions: dict[str, list[int]] = {}
        for position, item in enumerate(items):
            positions.setdefault(item.queue, []).append(position)
        pairs = {
            queue: [value for i in where for value in (items[i].job_id, items[i].token)]
            for queue, where in positions.items()
        }
        return cls(len(items), positions, pairs)

    def flags(self, replies: Sequence[Any]) -> list[bool]:
        """Per-lease results from one reply per queue, in the order of ``pairs``."""
        results = [False] * self.count
        for where, reply in zip(self.positions.values(), replies, strict=True):
            for position, flag in zip(where, reply, strict=True):
                results[position] = bool(flag)
        return results
