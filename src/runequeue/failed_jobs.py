"""Failed jobs for people and scripts: list, find, retry, forget, flush, prune.

``rune queue:failed``, ``queue:retry``, ``queue:forget``, ``queue:flush`` and ``queue:prune-failed``
are thin layers over `FailedJobs`.
"""

from __future__ import annotations

import asyncio
import builtins
import dataclasses
import datetime as dt
from collections.abc import Coroutine, Sequence
from concurrent.futures import ThreadPoolExecutor
from types import TracebackType
from typing import Any, Literal

from runequeue import job as job_registry
from runequeue import payload
from runequeue.config import QueueConfig
from runequeue.drivers.base import Outgoing
from runequeue.errors import AmbiguousJobRef, PayloadError, RuneQueueError
from runequeue.failed_job import FailedJob
from runequeue.failed_store import Claimed, FailedJobStore
from runequeue.queue import push_encoded
from runequeue.run_now import run_once
from runequeue.runner import Attempt

RetryStatus = Literal["retried", "missing", "error"]
JobRef = int | str  # a row id, or a job's uuid or a unique prefix of it (8 hex digits or more)


@dataclasses.dataclass(frozen=True, slots=True)
class RetryOutcome:
    """What `FailedJobs.retry` did with one row (``row_id`` 0: the reference named no row)."""

    row_id: int
    status: RetryStatus
    job_id: str = ""
    detail: str = ""
    ref: str = ""  # what the caller named the row by


class FailedJobs:
    """The failed jobs of ``config``'s database.

    Wherever a row is named, a `JobRef` works: the row id, the job's uuid, or a prefix of the uuid
    that only one row has (8 hex digits or more; a number is a row id first).

    Example:
        with FailedJobs(QueueConfig.from_env()) as failed:
            for outcome in failed.retry("all", queue="emails"):
                print(outcome)
    """

    def __init__(self, config: QueueConfig) -> None:
        self.config = config
        self.store = FailedJobStore(config.database_url)

    def list(self, queue: str | None = None) -> builtins.list[FailedJob]:
        """Every failed job (of ``queue``), oldest first."""
        return self.store.all(queue)

    def resolve(self, ref: JobRef) -> int | None:
        """The row id ``ref`` names, or ``None`` if it names no failed job.

        Raises:
            AmbiguousJobRef: ``ref`` is a uuid prefix that more than one row has.
        """
        text = str(ref).strip()
        if text.isascii() and text.isdigit():
            row_id = int(text)
            if self.store.find([row_id]):
                return row_id
            if len(text) < 8:
                return None  # too short to be a uuid prefix: a row id, and not a row's
        matches = self.store.row_ids_of(text)
        if len(matches) > 1:
            shown = ", ".join(str(row_id) for row_id in matches)
            raise AmbiguousJobRef(
                f"{text!r} is the start of more than one failed job's uuid (ids {shown}); "
                "give more of the uuid, or the id"
            )
        return matches[0] if matches else None

    def find(self, ref: JobRef) -> FailedJob | None:
        """The failed job ``ref`` names, or ``None``."""
        row_id = self.resolve(ref)
        found = [] if row_id is None else self.store.find([row_id])
        return found[0] if found else None

    def retry(
        self, refs: Sequence[JobRef] | Literal["all"], *, queue: str | None = None
    ) -> builtins.list[RetryOutcome]:
        """Push failed jobs back onto their connection and queue, with their attempts reset.

        A row is deleted in the same transaction that puts its job back (or, for a queue other
        than this database's, only after the push succeeded), and a row retried twice at once is
        pushed once. ``sync`` jobs run here and now, so their classes must be registered in this
        process. Unknown references are ``missing``; an error with one row does not stop the
        others.
        """
        if refs == "all":
            refs = self.store.ids(queue)
        elif isinstance(refs, str):
            refs = [refs]
        return [self._retry_ref(ref) for ref in refs]

    def retry_rows(self, row_ids: Sequence[int]) -> builtins.list[RetryOutcome]:
        """`retry` by row ids only (a number is never taken for a uuid prefix): for callers
        holding ids they listed, such as the dashboard."""
        outcomes = []
        for row_id in row_ids:
            try:
                outcome = self._retry_one(row_id)
            except RuneQueueError as exc:
                outcome = RetryOutcome(row_id, "error", detail=str(exc))
            outcomes.append(dataclasses.replace(outcome, ref=str(row_id)))
        return outcomes

    def _retry_ref(self, ref: JobRef) -> RetryOutcome:
        text = str(ref).strip()
        number = int(text) if text.isascii() and text.isdigit() else 0
        try:
            row_id = self.resolve(text)
            if row_id is None:
                return RetryOutcome(
                    number, "missing", detail="no failed job with this id", ref=text
                )
            return dataclasses.replace(self._retry_one(row_id), ref=text)
        except RuneQueueError as exc:
            return RetryOutcome(number, "error", detail=str(exc), ref=text)

    def _retry_one(self, row_id: int) -> RetryOutcome:
        with self.store.claim(row_id) as claimed:
            if claimed is None:  # another retry took it first
                return RetryOutcome(row_id, "missing", detail="no failed job with this id")
            failed = claimed.job
            if failed.connection == "sync":
                return self._run_again(claimed)
            problem = self._put_back(claimed)
        if problem is not None:
            return RetryOutcome(row_id, "error", failed.job_id, problem)
        return RetryOutcome(row_id, "retried", failed.job_id, f"{failed.connection}/{failed.queue}")

    def _put_back(self, claimed: Claimed) -> str | None:
        """Queue the claimed job again; what went wrong, or ``None``. Raising keeps the row.

        A crash before the claim commits leaves the row: the job may then be queued twice (once
        by this push, once by the next retry), never lost.
        """
        failed = claimed.job
        item = self._outgoing(failed)
        if failed.connection == "database":  # the jobs table of this very database
            if not claimed.move_to_jobs(item):
                return (
                    f"job {failed.job_id} is still in the jobs table (a worker is recording its "
                    "failure); try again in a moment"
                )
            return None
        if not push_encoded(self.config.with_driver(failed.connection), [item]):
            # Its id is still there (its failure recorded, not yet purged): pushing skipped it.
            return (
                f"job {failed.job_id} is still in {failed.connection} (a worker is recording its "
                "failure); try again in a moment"
            )
        claimed.delete()
        return None

    def _outgoing(self, failed: FailedJob) -> Outgoing:
        try:
            max_tries = self.config.codec.decode(failed.payload).max_tries
        except PayloadError:
            max_tries = None  # pushed as it is: the worker fails it again, with the reason
        return Outgoing(failed.job_id, failed.queue, failed.payload, max_tries=max_tries)

    def _run_again(self, claimed: Claimed) -> RetryOutcome:
        """Run a ``sync`` job here and now, holding its row: a second failure updates the row
        in the claim's transaction, and an interrupted run (Ctrl-C) rolls back and keeps it."""
        failed = claimed.job
        problem = self._cannot_build(failed)
        if problem is not None:  # the row and its exception stay as they are
            return RetryOutcome(failed.id, "error", failed.job_id, problem)
        attempt: Attempt = _run_coroutine(run_once(failed.payload, self.config.codec))
        if attempt.error is None:
            claimed.delete()
            return RetryOutcome(failed.id, "retried", failed.job_id, "sync: ran here, and done")
        claimed.record_again(attempt.error_text())
        error = f"{type(attempt.error).__name__}: {attempt.error}"
        return RetryOutcome(failed.id, "error", failed.job_id, f"failed again: {error}")

    def _cannot_build(self, failed: FailedJob) -> str | None:
        """Why this process cannot rebuild the job (and so must not run it), or ``None``."""
        try:
            envelope = self.config.codec.decode(failed.payload)
        except PayloadError as exc:
            return f"cannot build the job from its stored payload: {exc}"
        if not job_registry.is_registered(envelope.job):
            return (
                f"job class {envelope.job!r} is not registered in this process; "
                "name the module that defines it with --import (or RUNE_IMPORTS)"
            )
        try:
            payload.build_job(envelope, attempt=1)
        except PayloadError as exc:
            return f"cannot build the job from its stored payload: {exc}"
        return None

    def forget(self, ref: JobRef) -> bool:
        """Delete one failed job; ``False`` if ``ref`` names none."""
        row_id = self.resolve(ref)
        return row_id is not None and self.store.forget(row_id)

    def flush(self, *, hours: float | None = None) -> int:
        """Delete every failed job, or only those older than ``hours``; returns how many."""
        return self.store.flush(None if hours is None else dt.timedelta(hours=hours))

    def prune(self, *, hours: float) -> int:
        """Delete failed jobs older than ``hours``; returns how many."""
        return self.store.flush(dt.timedelta(hours=hours))

    def close(self) -> None:
        self.store.close()

    def __enter__(self) -> FailedJobs:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


def _run_coroutine(coro: Coroutine[Any, Any, Attempt]) -> Attempt:
    """Run ``coro`` to the end from blocking code, even when called from inside an event loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    # This thread's loop is busy running our caller: the job gets a loop of its own.
    with ThreadPoolExecutor(1, thread_name_prefix="runequeue-retry") as pool:
        return pool.submit(asyncio.run, coro).result()
