"""runequeue: Laravel-style background job queues for Python."""

from importlib.metadata import PackageNotFoundError, version

from runequeue.config import QueueConfig
from runequeue.errors import (
    AmbiguousJobRef,
    BadSignature,
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
    MissingDatabase,
    MissingTable,
    PayloadError,
    PayloadTooLarge,
    RuneQueueError,
    UnknownJob,
)
from runequeue.job import Job
from runequeue.queue import Queue
from runequeue.worker import Worker, WorkerOptions

try:
    __version__ = version("runequeue")
except PackageNotFoundError:  # imported from a source tree that was never installed
    __version__ = "0+unknown"

__all__ = [
    "AmbiguousJobRef",
    "BadSignature",
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
    "JobTimeout",
    "LeaseExpired",
    "MissingDatabase",
    "MissingTable",
    "PayloadError",
    "PayloadTooLarge",
    "Queue",
    "QueueConfig",
    "RuneQueueError",
    "UnknownJob",
    "Worker",
    "WorkerOptions",
    "__version__",
]
