"""A batch as its backend stores it, and the rules that move its counters.

Every backend keeps one record per batch beside the batch's jobs (a Redis hash, a ``job_batches``
row, the memory store's dict) and moves it in the same atomic step as each job's acknowledgement or
failure. The database and memory drivers run the rules below inside that step; Redis runs the same
rules in Lua (``lua/batch.lua``), and the conformance suite holds the three to one behaviour.

The rules (Laravel's, with the one difference noted):
- ``pending`` counts jobs that have not succeeded; a success lowers it, a failure does not (a
  failed job can still be retried, and succeed).
- ``failed`` counts failures for good; ``failed_ids`` holds the jobs failed now (one retried with
  success leaves it). A failure already in ``failed_ids`` changes nothing, so recording one twice
  (a lease-expired job whose failure is recorded by every sweep until it is purged) counts once.
- ``then`` is stored when ``pending`` reaches 0 with no failure ever; ``catch`` at the first
  failure, which also cancels the batch unless it allows failures; ``finally`` when every job
  has run, succeeded or failed (``pending == len(failed_ids)``), which also sets ``finished_at``.
  Each callback is stored once: it is removed from the record as it is stored, and its id is
  fixed at dispatch, so a second store of it is skipped.
- Unlike Laravel, cancelling a batch does not set ``finished_at``: that always means "every job
  has run".
"""

from __future__ import annotations

import dataclasses

import msgspec

from runequeue.drivers.base import Outgoing

CALLBACK_NAMES = ("then", "catch", "finally")


class StoredCallback(msgspec.Struct, frozen=True):
    """A batch's callback job, encoded at dispatch, stored when its moment comes."""

    id: str
    raw: bytes
    max_tries: int | None = None


class Callbacks(msgspec.Struct, frozen=True, omit_defaults=True):
    """The callbacks still to store, by name (`CALLBACK_NAMES`)."""

    then: StoredCallback | None = None
    catch: StoredCallback | None = None
    finally_: StoredCallback | None = msgspec.field(default=None, name="finally")


callbacks_encoder = msgspec.json.Encoder()
callbacks_decoder = msgspec.json.Decoder(Callbacks)


@dataclasses.dataclass(slots=True)
class BatchRecord:
    """One batch's stored state. Times are epoch seconds."""

    id: str
    name: str
    queue: str
    total: int
    pending: int
    failed: int
    failed_ids: list[str]
    allow_failures: bool
    created_at: float
    finished_at: float | None = None
    cancelled_at: float | None = None
    callbacks: Callbacks = dataclasses.field(default_factory=Callbacks)

    def succeeded(self, job_id: str, now: float) -> list[Outgoing]:
        """A job of the batch succeeded: the counters move; returns the callbacks now due."""
        self.pending = max(self.pending - 1, 0)
        if job_id in self.failed_ids:
            self.failed_ids.remove(job_id)
        due = []
        if self.pending == 0 and self.failed == 0:
            due.append("then")
        return self._take(due + self._if_all_ran(now))

    def failed_for_good(self, job_id: str, now: float) -> list[Outgoing]:
        """A job of the batch failed for good; returns the callbacks now due. A failure already
        recorded changes nothing."""
        if job_id in self.failed_ids:
            return []
        self.failed += 1
        self.failed_ids.append(job_id)
        due = []
        if self.failed == 1:
            due.append("catch")
            if not self.allow_failures and self.cancelled_at is None:
                self.cancelled_at = now
        return self._take(due + self._if_all_ran(now))

    def moved(self, job_id: str, *, succeeded: bool, now: float) -> list[Outgoing]:
        """`succeeded` or `failed_for_good`, as the job's outcome says."""
        return self.succeeded(job_id, now) if succeeded else self.failed_for_good(job_id, now)

    def prunable(self, finished_before: float, unfinished_before: float | None) -> bool:
        """Whether ``rune queue:prune-batches`` deletes it: finished before ``finished_before``,
        or, when given, unfinished and created before ``unfinished_before``."""
        if self.finished_at is not None:
            return self.finished_at < finished_before
        return unfinished_before is not None and self.created_at < unfinished_before

    def grew(self, count: int) -> None:
        """Jobs were added to the batch (from one of its running jobs)."""
        self.total += count
        self.pending += count

    def _if_all_ran(self, now: float) -> list[str]:
        if self.pending != len(self.failed_ids):
            return []
        if self.finished_at is None:
            self.finished_at = now
        return ["finally"]

    def _take(self, names: list[str]) -> list[Outgoing]:
        """The callbacks named, as jobs to store on the batch's queue, removed from the record."""
        due = []
        for name in names:
            field = "finally_" if name == "finally" else name
            callback: StoredCallback | None = getattr(self.callbacks, field)
            if callback is not None:
                due.append(Outgoing(callback.id, self.queue, callback.raw, 0.0, callback.max_tries))
                self.callbacks = msgspec.structs.replace(self.callbacks, **{field: None})
        return due
