"""A batch seen from code: `Batch`, a batch as read (Laravel's fields), and `JobBatch`, a job's
own batch as ``self.batch``. Kept apart from `runequeue.batches` (which builds and dispatches
batches) because `Job` refers to `JobBatch`, and this module needs nothing that needs `Job`."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
from collections.abc import Sequence
from typing import TYPE_CHECKING

from runequeue.batch_state import BatchRecord
from runequeue.drivers.base import BatchStore, Outgoing
from runequeue.errors import BatchNotFound, ConfigError

if TYPE_CHECKING:
    from runequeue.job import Job
    from runequeue.payload import BatchRef, Codec


@dataclasses.dataclass(frozen=True)
class Batch:
    """A batch as it was when read, with Laravel's field names. ``fresh()`` reads it again.

    ``pending_jobs`` counts the jobs that have not succeeded (a failed one stays pending: it can
    be retried); ``processed_jobs`` is ``total_jobs - pending_jobs``; ``progress`` is that as a
    percentage. ``finished_at`` is set once every job has run, succeeded or failed.
    """

    id: str
    name: str
    queue: str
    total_jobs: int
    pending_jobs: int
    failed_jobs: int
    failed_job_ids: list[str]
    allow_failures: bool
    created_at: dt.datetime
    finished_at: dt.datetime | None
    cancelled_at: dt.datetime | None
    _handle: JobBatch = dataclasses.field(repr=False, compare=False)

    @property
    def processed_jobs(self) -> int:
        return self.total_jobs - self.pending_jobs

    @property
    def progress(self) -> int:
        """0-100: the share of the batch's jobs that have succeeded (100 for an empty batch)."""
        if self.total_jobs == 0:
            return 100
        return round(self.processed_jobs * 100 / self.total_jobs)

    def finished(self) -> bool:
        return self.finished_at is not None

    def cancelled(self) -> bool:
        return self.cancelled_at is not None

    def has_failures(self) -> bool:
        return self.failed_jobs > 0

    def cancel(self) -> None:
        """Mark the batch cancelled. Its jobs still run: a job checks ``self.batch.cancelled()``
        (Laravel's rule), and the ``SkipIfBatchCancelled`` middleware does that for it."""
        self._handle.cancel()

    def add(self, jobs: Sequence[Job]) -> list[str]:
        """Add jobs to the batch (see `JobBatch.add`)."""
        return self._handle.add(jobs)

    def fresh(self) -> Batch:
        """The batch as it is now."""
        return self._handle.fresh()

    def to_dict(self) -> dict[str, object]:
        """The fields, times as ISO 8601 text, for JSON."""
        fields = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                  if not f.name.startswith("_")}  # fmt: skip
        for name in ("created_at", "finished_at", "cancelled_at"):
            value = fields[name]
            fields[name] = value.isoformat() if isinstance(value, dt.datetime) else None
        return {**fields, "processed_jobs": self.processed_jobs, "progress": self.progress}


class JobBatch:
    """A job's batch, as ``self.batch`` inside it (``None`` outside a batch): read when asked,
    not when the job starts, so a job of a batch costs nothing more unless it looks.

    Each method reads or writes the backend: the plain ones block (call them from a plain ``def
    handle``, or accept a short block), the ``*_async`` ones are for ``async def handle``.
    """

    def __init__(self, batch_id: str, queue: str, store: BatchStore, codec: Codec) -> None:
        self.id = batch_id
        self.queue = queue
        self._store = store
        self._codec = codec

    def __repr__(self) -> str:
        return f"JobBatch(id={self.id!r}, queue={self.queue!r})"

    def fresh(self) -> Batch:
        """The batch as it is now. Raises `BatchNotFound` if it was pruned."""
        record = self._store.find_batch(self.id)
        if record is None:
            raise BatchNotFound(f"batch {self.id} does not exist (pruned?)")
        return batch_of(record, self._store, self._codec)

    def cancelled(self) -> bool:
        """Whether the batch has been cancelled (by ``cancel()``, or by a failure in a batch
        that does not allow failures)."""
        return self.fresh().cancelled()

    def cancel(self) -> None:
        if not self._store.cancel_batch(self.id):
            raise BatchNotFound(f"batch {self.id} does not exist (pruned?)")

    def add(self, jobs: Sequence[Job]) -> list[str]:
        """Store more jobs in the batch, on its queue; its total and pending jobs grow by as many
        in the same step. Returns their ids. Raises `BatchNotFound` if it was pruned."""
        from runequeue.payload import BatchRef  # (payload imports job, which imports this)

        items = [encoded(job, self.queue, BatchRef(id=self.id), self._codec) for job in jobs]
        refuse_unique(jobs)
        if not self._store.add_to_batch(self.id, self.queue, items):
            raise BatchNotFound(f"batch {self.id} does not exist (pruned?): nothing was added")
        return [item.job_id for item in items]

    async def fresh_async(self) -> Batch:
        return await asyncio.to_thread(self.fresh)

    async def cancelled_async(self) -> bool:
        return await asyncio.to_thread(self.cancelled)

    async def cancel_async(self) -> None:
        await asyncio.to_thread(self.cancel)

    async def add_async(self, jobs: Sequence[Job]) -> list[str]:
        return await asyncio.to_thread(self.add, jobs)


def batch_of(record: BatchRecord, store: BatchStore, codec: Codec) -> Batch:
    return Batch(
        id=record.id,
        name=record.name,
        queue=record.queue,
        total_jobs=record.total,
        pending_jobs=record.pending,
        failed_jobs=record.failed,
        failed_job_ids=list(record.failed_ids),
        allow_failures=record.allow_failures,
        created_at=_time(record.created_at),
        finished_at=None if record.finished_at is None else _time(record.finished_at),
        cancelled_at=None if record.cancelled_at is None else _time(record.cancelled_at),
        _handle=JobBatch(record.id, record.queue, store, codec),
    )


def encoded(job: Job, queue: str, batch: BatchRef, codec: Codec) -> Outgoing:
    from runequeue import payload  # (payload imports job, which imports this)

    envelope = payload.envelope_for(job, queue=queue, batch=batch)
    return Outgoing(envelope.id, queue, codec.encode(envelope), 0.0, envelope.max_tries)


def refuse_unique(jobs: Sequence[Job]) -> None:
    unique = sorted({type(job).job_name for job in jobs if job.unique_for is not None})
    if unique:
        raise ConfigError(
            f"a batch cannot hold unique jobs ({', '.join(unique)}): their lock could leave the "
            "batch waiting for a job that was never stored"
        )


def _time(seconds: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(seconds, dt.UTC)
