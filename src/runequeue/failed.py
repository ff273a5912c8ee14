"""Where jobs that failed for good are kept: the failed-job store.

`FailedJobStore` is what the worker and the sync driver write to. Recording is idempotent by job id,
because the worker records a failure and only then deletes the job from the queue backend
(invariant 5): after a crash between the two, the same failure is recorded again, not twice.

`RedisFailedJobs` keeps failures in one Redis hash per queue (``queues:{Q}:failed``, id -> JSON).
It is the interim store until the ``failed_jobs`` SQL table replaces it.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Protocol

import msgspec
import redis.asyncio as aioredis

from runequeue.config import QueueConfig
from runequeue.drivers.redis import QueueKeys, mapped_errors
from runequeue.errors import DriverError, FailedStoreError


@dataclasses.dataclass(frozen=True, slots=True)
class FailedJob:
    """One failed job: the exact stored payload and why it failed."""

    job_id: str
    connection: str
    queue: str
    payload: bytes
    exception: str
    failed_at: float = dataclasses.field(default_factory=time.time)


class FailedJobStore(Protocol):
    async def record(self, failure: FailedJob) -> None:
        """Keep ``failure``; recording the same job id again replaces the earlier record."""

    async def list(self, queue: str) -> list[FailedJob]: ...

    async def flush(self, queue: str) -> int:
        """Delete every failed job of ``queue``; returns how many."""

    async def close(self) -> None: ...


class _Row(msgspec.Struct, frozen=True):
    job_id: str
    connection: str
    queue: str
    payload: str
    exception: str
    failed_at: float


class RedisFailedJobs:
    """Failed jobs in ``queues:{Q}:failed`` hashes beside the queue's own keys."""

    def __init__(self, url: str, *, prefix: str = "queues") -> None:
        self.url = url
        self.prefix = prefix
        self.client = aioredis.Redis.from_url(url, socket_connect_timeout=5, socket_timeout=5)

    def _key(self, queue: str) -> str:
        return f"{QueueKeys.of(self.prefix, queue).ready}:failed"

    async def record(self, failure: FailedJob) -> None:
        row = _Row(
            failure.job_id,
            failure.connection,
            failure.queue,
            failure.payload.decode("utf-8", errors="backslashreplace"),  # forensics, not replay
            failure.exception,
            failure.failed_at,
        )
        try:
            with mapped_errors(self.url):
                await self.client.hset(
                    self._key(failure.queue), failure.job_id, msgspec.json.encode(row)
                )
        except DriverError as exc:
            raise FailedStoreError(f"could not record failed job {failure.job_id}: {exc}") from exc

    async def list(self, queue: str) -> list[FailedJob]:
        with mapped_errors(self.url):
            rows = await self.client.hvals(self._key(queue))
        decoded = [msgspec.json.decode(raw, type=_Row) for raw in rows]
        return sorted(
            (
                FailedJob(
                    r.job_id, r.connection, r.queue, r.payload.encode(), r.exception, r.failed_at
                )
                for r in decoded
            ),
            key=lambda failure: failure.failed_at,
        )

    async def flush(self, queue: str) -> int:
        with mapped_errors(self.url):
            count = int(await self.client.hlen(self._key(queue)))
            await self.client.delete(self._key(queue))
        return count

    async def close(self) -> None:
        await self.client.aclose()


_store_check: type[FailedJobStore] = RedisFailedJobs


def open_failed_store(config: QueueConfig) -> FailedJobStore:
    """The failed-job store for ``config``."""
    return RedisFailedJobs(config.redis_url, prefix=config.redis_prefix)
