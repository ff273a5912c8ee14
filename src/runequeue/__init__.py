"""runequeue: Laravel-style background job queues for Python."""

from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING

from runequeue.batches import Batch
from runequeue.bus import Bus
from runequeue.config import QueueConfig
from runequeue.errors import (
    AmbiguousJobRef,
    BadSignature,
    BatchNotFound,
    ConfigError,
    DatabaseAccessDenied,
    DatabaseUnavailable,
    DispatchError,
    DriverError,
    DriverUnavailable,
    DuplicateJobName,
    FailedStoreError,
    InvalidPayload,
    JobTimeout,
    LeaseExpired,
    ManuallyFailed,
    MissingDatabase,
    MissingTable,
    PayloadError,
    PayloadTooLarge,
    RetryDeadlinePassed,
    RuneQueueError,
    UnknownJob,
)
from runequeue.events import (
    JobFailed,
    JobProcessed,
    JobProcessing,
    JobQueued,
    JobRetrying,
    WorkerStopping,
)
from runequeue.job import Job
from runequeue.queue import Queue

if TYPE_CHECKING:
    from runequeue.worker import Worker, WorkerOptions


def __getattr__(name: str) -> object:
    # The worker (and with it SQLAlchemy, for failed_jobs) loads when it is first asked for, so
    # a web app that only dispatches does not pay for it at import.
    if name in ("Worker", "WorkerOptions"):
        from runequeue import worker

        return getattr(worker, name)
    raise AttributeError(f"module 'runequeue' has no attribute {name!r}")


try:
    __version__ = version("runequeue")
except PackageNotFoundError:  # imported from a source tree that was never installed
    __version__ = "0+unknown"

__all__ = [
    "AmbiguousJobRef",
    "BadSignature",
    "Batch",
    "BatchNotFound",
    "Bus",
    "ConfigError",
    "DatabaseAccessDenied",
    "DatabaseUnavailable",
    "DispatchError",
    "DriverError",
    "DriverUnavailable",
    "DuplicateJobName",
    "FailedStoreError",
    "InvalidPayload",
    "Job",
    "JobFailed",
    "JobProcessed",
    "JobProcessing",
    "JobQueued",
    "JobRetrying",
    "JobTimeout",
    "LeaseExpired",
    "ManuallyFailed",
    "MissingDatabase",
    "MissingTable",
    "PayloadError",
    "PayloadTooLarge",
    "Queue",
    "QueueConfig",
    "RetryDeadlinePassed",
    "RuneQueueError",
    "UnknownJob",
    "Worker",
    "WorkerOptions",
    "WorkerStopping",
    "__version__",
]
