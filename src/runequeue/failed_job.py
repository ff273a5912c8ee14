"""One failed job as the ``failed_jobs`` table keeps it: a plain record, free of SQL, so code that
only reads or makes one (the sync driver, the CLI's tables) does not load SQLAlchemy."""

from __future__ import annotations

import dataclasses
import datetime as dt

from runequeue import payload

SHORT_ID_LENGTH = 8  # what `rune queue:failed` shows of a uuid, and the shortest prefix accepted


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@dataclasses.dataclass(frozen=True, slots=True)
class FailedJob:
    """One failed job: the exact stored payload and why it failed."""

    job_id: str
    connection: str
    queue: str
    payload: bytes
    exception: str
    failed_at: dt.datetime = dataclasses.field(default_factory=utcnow)
    id: int = 0  # the row's key, once stored

    @property
    def job_name(self) -> str:
        return payload.peek_name(self.payload) or "?"

    @property
    def summary(self) -> str:
        """The first line of the exception."""
        return self.exception.splitlines()[0] if self.exception else ""

    @property
    def short_id(self) -> str:
        """The first 8 characters of the job id: enough to name it (commands accept a prefix)."""
        return self.job_id[:SHORT_ID_LENGTH]

    @property
    def exception_line(self) -> str:
        """``Type: message`` of the exception, without the type's module: one line for a table.

        The stored text starts ``module.Type: message``; text of another shape is shown as it is.
        """
        kind, colon, message = self.summary.partition(": ")
        if not colon or " " in kind:
            return self.summary
        short_kind = kind.rpartition(".")[2]
        return f"{short_kind}: {message}" if message else short_kind
