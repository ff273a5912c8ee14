"""Failed jobs for people and scripts: list, find, retry, forget, flush, prune.

``rune queue:failed``, ``queue:retry``, ``queue:forget``, ``queue:flush`` and ``queue:prune-failed``
are thin layers over `FailedJobs`.
"""

from __future__ import annotations

import builtins
import dataclasses
import datetime as dt
from collections.abc import Sequence
from types import TracebackType
from typing import Literal

from runequeue.config import QueueConfig
from runequeue.drivers.base import Outgoing
from runequeue.errors import PayloadError, RuneQueueError
from runequeue.failed import FailedJob, FailedJobStore
from runequeue.queue import push_stored

RetryStatus = Literal["retried", "missing", "error"]


@dataclasses.dataclass(frozen=True, slots=True)
class RetryOutcome:
    """What `FailedJobs.retry` did with one row."""

    row_id: int
    status: RetryStatus
    job_id: str = ""
    detail: str = ""


class FailedJobs:
    """The failed jobs of ``config``'s database.

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

    def find(self, row_id: int) -> FailedJob | None:
        found = self.store.find([row_id])
        return found[0] if found else None

    def retry(
        self, ids: Sequence[int] | Literal["all"], *, queue: str | None = None
    ) -> builtins.list[RetryOutcome]:
        """Push failed jobs back onto their connection and queue, with their attempts reset.

        Each row is deleted only after its push succeeded, and a row retried twice at once is
        pushed once. Unknown ids are reported as ``missing``; an error with one row does not stop
        the others.
        """
        row_ids = self.store.ids(queue) if ids == "all" else list(ids)
        return [self._retry_one(row_id) for row_id in row_ids]

    def _retry_one(self, row_id: int) -> RetryOutcome:
        try:
            with self.store.claim(row_id) as failed:
                if failed is None:
                    return RetryOutcome(row_id, "missing", detail="no failed job with this id")
                # A sync job runs inside its push; it must not run while we hold its row,
                # because a second failure records into that very row.
                if failed.connection != "sync":
                    self._push(failed)
        except RuneQueueError as exc:
            return RetryOutcome(row_id, "error", detail=str(exc))
        if failed.connection == "sync":
            try:
                self._push(failed)
            except Exception as exc:  # the job's own error: it is recorded again
                return RetryOutcome(row_id, "error", failed.job_id, f"failed again: {exc}")
        return RetryOutcome(row_id, "retried", failed.job_id, f"{failed.connection}/{failed.queue}")

    def _push(self, failed: FailedJob) -> None:
        try:
            max_tries = self.config.codec.decode(failed.payload).max_tries
        except PayloadError:
            max_tries = None  # pushed as it is: it will be failed again, with the reason
        item = Outgoing(failed.job_id, failed.queue, failed.payload, max_tries=max_tries)
        push_stored(self.config.with_driver(failed.connection), [item])

    def forget(self, row_id: int) -> bool:
        """Delete one failed job; ``False`` if there is none with that id."""
        return self.store.forget(row_id)

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
