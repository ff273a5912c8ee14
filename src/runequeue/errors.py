"""One error tree for everything runequeue raises.

A class's docstring is its default message, so ``raise DriverUnavailable()`` already says something
useful; pass a message to add the specifics (which URL, which job).
"""

from __future__ import annotations

from collections.abc import Sequence


class RuneQueueError(Exception):
    """A runequeue error."""

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or (self.__doc__ or "").strip().splitlines()[0])


class ConfigError(RuneQueueError):
    """The queue configuration is invalid."""


class DuplicateJobName(ConfigError):
    """Two different job classes were registered under the same name."""


class DriverError(RuneQueueError):
    """The queue backend reported an error."""


class DriverUnavailable(DriverError):
    """The queue backend could not be reached."""


class BackendFull(DriverError):
    """The queue backend refuses new data: it is full (Redis at ``maxmemory``, say)."""


class DispatchError(DriverError):
    """The job could not be dispatched.

    A bulk dispatch is all or nothing per backend connection. When its jobs go to more than one
    connection (job classes with a ``connection`` of their own), ``stored`` holds the ids of the
    jobs already stored on the connections before the one that failed; none of the rest is.
    """

    def __init__(self, message: str | None = None, *, stored: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.stored: tuple[str, ...] = tuple(stored)


class PayloadError(RuneQueueError):
    """A stored job payload cannot be turned back into a job."""


class InvalidPayload(PayloadError):
    """The payload is not a valid runequeue envelope."""


class UnknownJob(PayloadError):
    """The payload names a job class that this application did not register."""


class BadSignature(PayloadError):
    """The payload's signature is missing or wrong; it was not parsed."""


class PayloadTooLarge(PayloadError):
    """The encoded job is larger than the configured maximum payload size."""


class JobTimeout(RuneQueueError):
    """The job ran longer than its timeout."""


class LeaseExpired(RuneQueueError):
    """The worker running the job vanished and the job has no attempts left."""


class FailedStoreError(RuneQueueError):
    """The failed-job store could not record or read a failure."""


class DatabaseUnavailable(FailedStoreError):
    """The database could not be reached."""


class MissingTable(FailedStoreError):
    """A runequeue table does not exist; run `rune migrate`."""


class MissingDatabase(FailedStoreError):
    """The database named by DATABASE_URL does not exist; create it or fix DATABASE_URL."""


class DatabaseAccessDenied(FailedStoreError):
    """The database server refused DATABASE_URL's user or password."""


class ManuallyFailed(RuneQueueError):
    """The job called ``self.fail(reason)``."""


class RetryDeadlinePassed(RuneQueueError):
    """The job was reached after its ``retry_until`` deadline."""


class BatchNotFound(RuneQueueError):
    """No batch has this id (it was never stored, or it was pruned)."""


class AmbiguousJobRef(RuneQueueError):
    """A uuid prefix matches more than one failed job."""
