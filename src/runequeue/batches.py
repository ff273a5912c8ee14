"""Batches: many jobs dispatched as one, with callbacks when they are done (Laravel's
``Bus::batch``; built with `Bus.batch`, found again with `Bus.find_batch`).

A batch's record lives in the backend that holds its jobs (`runequeue.batch_state` says how its
counters move, and `docs/workflows.md` what is atomic). Its callbacks, ``then``, ``catch`` and
``finally_``, are jobs, encoded and checked when the batch is dispatched and stored by the backend
in the same step as the outcome that makes them due, so each runs once.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

from runequeue import payload
from runequeue.batch_state import BatchRecord, Callbacks, StoredCallback
from runequeue.config import QueueConfig
from runequeue.drivers.base import Outgoing
from runequeue.errors import ConfigError
from runequeue.job import Job
from runequeue.job_batch import Batch, JobBatch, batch_of, encoded, refuse_unique
from runequeue.payload import BatchRef, Codec

__all__ = ["Batch", "JobBatch", "PendingBatch", "batch_of"]


class PendingBatch:
    """A batch being put together: ``Bus.batch([...]).name("import").then(Done())
    .catch(Failed()).finally_(Cleanup()).allow_failures().dispatch(config)``."""

    def __init__(self, jobs: Sequence[Job]) -> None:
        self._jobs = list(jobs)
        self._name = ""
        self._queue: str | None = None
        self._allow_failures = False
        self._callbacks: dict[str, Job] = {}

    def name(self, name: str) -> PendingBatch:
        self._name = name
        return self

    def on_queue(self, queue: str) -> PendingBatch:
        """Run the batch's jobs and callbacks on ``queue`` (default: the first job's queue, else
        the configuration's): a batch lives on one queue."""
        self._queue = queue
        return self

    def then(self, job: Job) -> PendingBatch:
        """Dispatch ``job`` once every job of the batch has succeeded."""
        self._callbacks["then"] = job
        return self

    def catch(self, job: Job) -> PendingBatch:
        """Dispatch ``job`` once, at the batch's first failure for good."""
        self._callbacks["catch"] = job
        return self

    def finally_(self, job: Job) -> PendingBatch:
        """Dispatch ``job`` once every job of the batch has run, succeeded or failed."""
        self._callbacks["finally"] = job
        return self

    def allow_failures(self, allow: bool = True) -> PendingBatch:
        """Keep the batch going after a failure (else the first failure cancels it)."""
        self._allow_failures = allow
        return self

    def dispatch(self, config: QueueConfig) -> Batch:
        """Store the batch and its jobs in one atomic step (one round trip on Redis, one
        transaction on a database); returns it. With the ``sync`` driver its jobs and callbacks
        run here.

        Raises:
            ConfigError: the jobs name different connections, or one is a unique job.
            DispatchError, PayloadTooLarge, InvalidPayload: as `Queue.dispatch`.
        """
        from runequeue.queue import batch_store  # (queue imports the runner, which imports this)

        connection, record, items = self._prepared(config)
        store = batch_store(connection)
        store.create_batch(record, items)
        return batch_of(record, store, connection.codec)

    async def dispatch_async(self, config: QueueConfig) -> Batch:
        """`dispatch` for async code (the store is called in a thread)."""
        return await asyncio.to_thread(self.dispatch, config)

    def _prepared(self, config: QueueConfig) -> tuple[QueueConfig, BatchRecord, list[Outgoing]]:
        every = [*self._jobs, *self._callbacks.values()]
        connections = {job.connection for job in every}
        if len(connections) > 1:
            raise ConfigError(
                "the jobs of a batch must use one connection; these name "
                + ", ".join(sorted(repr(name) for name in connections))
            )
        refuse_unique(self._jobs)
        (connection_name,) = connections or {None}
        connection = config.with_driver(connection_name) if connection_name else config
        first_queue = self._jobs[0].queue if self._jobs else None
        queue = self._queue or first_queue or config.queue_name
        batch_id = payload.new_job_id()
        codec = connection.codec
        items = [encoded(job, queue, BatchRef(id=batch_id), codec) for job in self._jobs]
        callback_ref = BatchRef(id=batch_id, counted=False)
        stored = {name: _callback(job, queue, callback_ref, codec)
                  for name, job in self._callbacks.items()}  # fmt: skip
        record = BatchRecord(
            id=batch_id, name=self._name, queue=queue, total=len(items), pending=len(items),
            failed=0, failed_ids=[], allow_failures=self._allow_failures,
            created_at=time.time(),
            callbacks=Callbacks(stored.get("then"), stored.get("catch"), stored.get("finally")),
        )  # fmt: skip
        if not items:  # nothing to wait for: done at once, then and finally due now
            items = record.succeeded("", record.created_at)
        return connection, record, items


def _callback(job: Job, queue: str, batch: BatchRef, codec: Codec) -> StoredCallback:
    item = encoded(job, queue, batch, codec)
    return StoredCallback(item.job_id, item.raw, item.max_tries)
