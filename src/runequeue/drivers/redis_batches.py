"""Batches on Redis (`BatchStore`): one hash and one set per batch beside its queue's keys, and an
index by id. The counters move inside ack_then.lua and bury.lua (lua/batch.lua); this is the rest:
create, add, find, list, cancel, prune, and the failure of a job the backend failed itself."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from typing import Any

import redis
import redis.cluster
from redis.typing import EncodableT, FieldT

from runequeue.batch_state import CALLBACK_NAMES, BatchRecord, Callbacks, StoredCallback
from runequeue.drivers.base import BatchStore, Outgoing
from runequeue.drivers.redis_connect import SyncClient
from runequeue.drivers.redis_keys import (
    KeyCache,
    batch_add_source,
    batch_keys,
    lua_source,
    push_calls,
    push_keys,
    with_helpers,
)
from runequeue.drivers.redis_transactions import Transactions
from runequeue.errors import DispatchError, DriverError

_CANCEL = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
if redis.call('HGET', KEYS[1], 'cancelled') == '' then
  local t = redis.call('TIME')
  redis.call('HSET', KEYS[1], 'cancelled', t[1] .. '.' .. string.format('%06d', tonumber(t[2])))
end
return 1
"""


class RedisBatches:
    """`BatchStore` on a blocking client (a producer's)."""

    def __init__(
        self,
        client: SyncClient,
        keys: KeyCache,
        errors: Callable[[], contextlib.AbstractContextManager[None]],
    ) -> None:
        self.client = client
        self.keys = keys
        self._errors = errors  # redis errors as DriverError
        self._index = f"{keys.prefix}:batches"
        self._queues = f"{keys.prefix}:batches:queue"
        self._push = client.register_script(lua_source("push"))
        self._add = client.register_script(batch_add_source())
        self._failed = client.register_script(with_helpers("batch_failed"))
        self._cancel = client.register_script(_CANCEL)
        self._transactions = Transactions(client)

    def create_batch(self, record: BatchRecord, jobs: Sequence[Outgoing]) -> None:
        batch, _ = batch_keys(self.keys(record.queue), record.id)
        cluster = isinstance(self.client, redis.cluster.RedisCluster)
        try:
            if cluster:
                # The index is in other slots than the batch's queue: written first, so a batch
                # is findable once it exists (`_forget_missing` drops an entry whose batch the
                # transaction below then failed to store).
                with self._errors(), self.client.pipeline(transaction=False) as pipe:
                    self._index_batch(pipe, record)
                    pipe.execute()

            def fill(pipe: Any) -> None:
                if not cluster:  # the index first, in the same transaction
                    self._index_batch(pipe, record)
                pipe.hset(batch, mapping=_fields(record))
                for keys, args in push_calls(self.keys, jobs):
                    self._push(keys=keys, args=args, client=pipe)

            with self._errors():
                self._transactions.run([self._push], fill, slot_of=batch)
        except DriverError as exc:
            raise DispatchError(f"could not dispatch the batch: {exc}") from exc

    def _index_batch(self, pipe: Any, record: BatchRecord) -> None:
        pipe.zadd(self._index, {record.id: int(record.created_at * 1000)})
        pipe.hset(self._queues, record.id, record.queue)

    def add_to_batch(self, batch_id: str, queue: str, jobs: Sequence[Outgoing]) -> bool:
        k = self.keys(queue)
        batch, _ = batch_keys(k, batch_id)

        def fill(pipe: Any) -> None:
            for _, args in push_calls(self.keys, jobs):
                self._add(keys=[*push_keys(k), batch], args=args, client=pipe)

        try:
            with self._errors():
                replies = self._transactions.run([self._add], fill, slot_of=batch)
        except DriverError as exc:
            raise DispatchError(f"could not add to batch {batch_id}: {exc}") from exc
        return all(int(reply) >= 0 for reply in replies)

    def find_batch(self, batch_id: str) -> BatchRecord | None:
        with self._errors():
            queue = self.client.hget(self._queues, batch_id)
            if queue is None:
                return None
            return self._read([batch_id], [queue])[0]

    def list_batches(self, limit: int) -> list[BatchRecord]:
        with self._errors():
            ids = [_text(i) for i in self.client.zrevrange(self._index, 0, limit - 1)]
            if not ids:
                return []
            queues = self.client.hmget(self._queues, ids)
            found = self._read(ids, queues)
        return [record for record in found if record is not None]

    def _read(self, ids: Sequence[str], queues: Sequence[Any]) -> list[BatchRecord | None]:
        with self.client.pipeline(transaction=False) as pipe:
            for batch_id, queue in zip(ids, queues, strict=True):
                batch, failed = batch_keys(self.keys(_text(queue or b"")), batch_id)
                pipe.hgetall(batch)
                pipe.smembers(failed)
            replies = pipe.execute()
        return [
            _record(batch_id, replies[2 * i], replies[2 * i + 1]) for i, batch_id in enumerate(ids)
        ]

    def cancel_batch(self, batch_id: str) -> bool:
        with self._errors():
            queue = self.client.hget(self._queues, batch_id)
            if queue is None:
                return False
            batch, _ = batch_keys(self.keys(_text(queue)), batch_id)
            return bool(self._cancel(keys=[batch]))

    def batch_failed(self, queue: str, batch_id: str, job_id: str) -> None:
        k = self.keys(queue)
        keys = [*batch_keys(k, batch_id), k.payload, k.tries, k.ready, k.notify]
        with self._errors():
            self._failed(keys=keys, args=[job_id])

    def prune_batches(self, *, finished_before: float, unfinished_before: float | None) -> int:
        pruned = 0
        with self._errors():
            for record in self._all():
                if record.prunable(finished_before, unfinished_before):
                    with self.client.pipeline(transaction=False) as pipe:
                        for key in batch_keys(self.keys(record.queue), record.id):
                            pipe.delete(key)  # one by one: a Cluster's pipeline asks that
                        pipe.zrem(self._index, record.id)
                        pipe.hdel(self._queues, record.id)
                        pipe.execute()
                    pruned += 1
            self._forget_missing()
        return pruned

    def _all(self) -> list[BatchRecord]:
        return self.list_batches(2**31)

    def _forget_missing(self) -> None:
        """Index entries whose batch is gone (a transaction that failed after the index was
        written cannot happen; a batch deleted by hand can)."""
        ids = [_text(i) for i in self.client.zrange(self._index, 0, -1)]
        if not ids:
            return
        queues = self.client.hmget(self._queues, ids)
        for batch_id, queue in zip(ids, queues, strict=True):
            if queue is None or not self.client.exists(
                batch_keys(self.keys(_text(queue)), batch_id)[0]
            ):
                self.client.zrem(self._index, batch_id)
                self.client.hdel(self._queues, batch_id)


def _fields(record: BatchRecord) -> dict[FieldT, EncodableT]:
    fields: dict[FieldT, EncodableT] = {
        "name": record.name, "queue": record.queue, "total": record.total,
        "pending": record.pending, "failed": record.failed,
        "allow": int(record.allow_failures), "created": repr(record.created_at),
        "finished": "" if record.finished_at is None else repr(record.finished_at),
        "cancelled": "" if record.cancelled_at is None else repr(record.cancelled_at),
    }  # fmt: skip
    for name in CALLBACK_NAMES:
        callback: StoredCallback | None = getattr(record.callbacks, _attr(name))
        if callback is not None:
            fields[f"{name}:id"] = callback.id
            fields[f"{name}:raw"] = callback.raw
            fields[f"{name}:tries"] = "" if callback.max_tries is None else callback.max_tries
    return fields


def _record(batch_id: str, fields: dict[bytes, bytes], failed: set[bytes]) -> BatchRecord | None:
    if not fields:
        return None
    text = {_text(key): value for key, value in fields.items()}

    def callback(name: str) -> StoredCallback | None:
        if f"{name}:id" not in text:
            return None
        tries = _text(text.get(f"{name}:tries", b""))
        return StoredCallback(
            _text(text[f"{name}:id"]), bytes(text[f"{name}:raw"]), int(tries) if tries else None
        )

    return BatchRecord(
        id=batch_id,
        name=_text(text["name"]),
        queue=_text(text["queue"]),
        total=int(text["total"]),
        pending=int(text["pending"]),
        failed=int(text["failed"]),
        failed_ids=sorted(_text(i) for i in failed),
        allow_failures=text["allow"] == b"1",
        created_at=float(text["created"]),
        finished_at=_time(text["finished"]),
        cancelled_at=_time(text["cancelled"]),
        callbacks=Callbacks(callback("then"), callback("catch"), callback("finally")),
    )


def _attr(name: str) -> str:
    return "finally_" if name == "finally" else name


def _time(value: bytes) -> float | None:
    return float(value) if value else None


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


_check: type[BatchStore] = RedisBatches
