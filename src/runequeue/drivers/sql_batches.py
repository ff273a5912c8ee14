"""Batches on the database driver (`BatchStore`): the ``job_batches`` table. A batch's row is
locked and updated in the transaction that acknowledges or fails each of its jobs (`move_batch`,
called by `DatabaseQueue`); the rules are `runequeue.batch_state`'s."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Sequence
from typing import Any

import msgspec
import sqlalchemy as sa

from runequeue.batch_state import BatchRecord, callbacks_decoder, callbacks_encoder
from runequeue.drivers.base import BatchStore, Outgoing
from runequeue.errors import DispatchError, DriverError
from runequeue.schema import job_batches

StoreJobs = Callable[[sa.Connection, Sequence[Outgoing]], int]
_ids_decoder = msgspec.json.Decoder(list[str])


def move_batch(
    conn: sa.Connection, batch_id: str, job_id: str, *, succeeded: bool
) -> list[Outgoing]:
    """Lock the batch's row (in ``conn``'s transaction), move its counters for ``job_id``, and
    return the callbacks now due, for the caller to store in the same transaction. A batch that
    does not exist (pruned) moves nothing."""
    record = _locked(conn, batch_id)
    if record is None:
        return []
    due = record.moved(job_id, succeeded=succeeded, now=time.time())
    conn.execute(
        sa.update(job_batches).where(job_batches.c.id == batch_id).values(**_changing(record))
    )
    return due


def _locked(conn: sa.Connection, batch_id: str) -> BatchRecord | None:
    # FOR UPDATE: two workers finishing jobs of one batch take turns (SQLite's transactions are
    # exclusive already, and it has no FOR UPDATE).
    query = sa.select(job_batches).where(job_batches.c.id == batch_id).with_for_update()
    row = conn.execute(query).first()
    return _record(row) if row is not None else None


class DatabaseBatches:
    """`BatchStore` on an engine of the database driver's."""

    def __init__(
        self,
        engine: sa.Engine,
        errors: Callable[[], contextlib.AbstractContextManager[None]],
        store_jobs: StoreJobs,
    ) -> None:
        self.engine = engine
        self._errors = errors
        self._store_jobs = store_jobs

    def create_batch(self, record: BatchRecord, jobs: Sequence[Outgoing]) -> None:
        try:
            with self._errors(), self.engine.begin() as conn:
                conn.execute(sa.insert(job_batches).values(id=record.id, name=record.name,
                             queue=record.queue, created_at=_ms(record.created_at),
                             **_changing(record)))  # fmt: skip
                if jobs:
                    self._store_jobs(conn, jobs)
        except DriverError as exc:
            raise DispatchError(f"could not dispatch the batch: {exc}") from exc

    def add_to_batch(self, batch_id: str, queue: str, jobs: Sequence[Outgoing]) -> bool:
        try:
            with self._errors(), self.engine.begin() as conn:
                record = _locked(conn, batch_id)
                if record is None:
                    return False
                record.grew(self._store_jobs(conn, jobs))  # (an id stored already counts once)
                conn.execute(sa.update(job_batches).where(job_batches.c.id == batch_id)
                             .values(**_changing(record)))  # fmt: skip
                return True
        except DriverError as exc:
            raise DispatchError(f"could not add to batch {batch_id}: {exc}") from exc

    def find_batch(self, batch_id: str) -> BatchRecord | None:
        with self._errors(), self.engine.connect() as conn:
            row = conn.execute(sa.select(job_batches).where(job_batches.c.id == batch_id)).first()
        return _record(row) if row is not None else None

    def list_batches(self, limit: int) -> list[BatchRecord]:
        query = sa.select(job_batches).order_by(job_batches.c.created_at.desc()).limit(limit)
        with self._errors(), self.engine.connect() as conn:
            return [_record(row) for row in conn.execute(query)]

    def cancel_batch(self, batch_id: str) -> bool:
        with self._errors(), self.engine.begin() as conn:
            found = conn.execute(
                sa.update(job_batches)
                .where(job_batches.c.id == batch_id, job_batches.c.cancelled_at.is_(None))
                .values(cancelled_at=_ms(time.time()))
            ).rowcount
            if found:
                return True
            exists = sa.select(job_batches.c.id).where(job_batches.c.id == batch_id)
            return conn.execute(exists).first() is not None

    def batch_failed(self, queue: str, batch_id: str, job_id: str) -> None:
        with self._errors(), self.engine.begin() as conn:
            due = move_batch(conn, batch_id, job_id, succeeded=False)
            if due:
                self._store_jobs(conn, due)

    def prune_batches(self, *, finished_before: float, unfinished_before: float | None) -> int:
        c = job_batches.c
        doomed = sa.and_(c.finished_at.is_not(None), c.finished_at < _ms(finished_before))
        if unfinished_before is not None:
            unfinished = sa.and_(c.finished_at.is_(None), c.created_at < _ms(unfinished_before))
            doomed = sa.or_(doomed, unfinished)
        with self._errors(), self.engine.begin() as conn:
            return int(conn.execute(sa.delete(job_batches).where(doomed)).rowcount)


def _changing(record: BatchRecord) -> dict[str, Any]:
    """The columns a batch's life changes."""
    return {
        "total_jobs": record.total,
        "pending_jobs": record.pending,
        "failed_jobs": record.failed,
        "failed_job_ids": msgspec.json.encode(record.failed_ids).decode(),
        "allow_failures": record.allow_failures,
        "callbacks": callbacks_encoder.encode(record.callbacks).decode(),
        "finished_at": None if record.finished_at is None else _ms(record.finished_at),
        "cancelled_at": None if record.cancelled_at is None else _ms(record.cancelled_at),
    }


def _record(row: sa.Row[Any]) -> BatchRecord:
    return BatchRecord(
        id=str(row.id),
        name=str(row.name),
        queue=str(row.queue),
        total=int(row.total_jobs),
        pending=int(row.pending_jobs),
        failed=int(row.failed_jobs),
        failed_ids=_ids_decoder.decode(row.failed_job_ids),
        allow_failures=bool(row.allow_failures),
        created_at=row.created_at / 1000,
        finished_at=None if row.finished_at is None else row.finished_at / 1000,
        cancelled_at=None if row.cancelled_at is None else row.cancelled_at / 1000,
        callbacks=callbacks_decoder.decode(row.callbacks),
    )


def _ms(seconds: float) -> int:
    return int(seconds * 1000)


_check: type[BatchStore] = DatabaseBatches
