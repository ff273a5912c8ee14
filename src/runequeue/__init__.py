"""runequeue: Laravel-style background job queues for Python."""

from runequeue.config import QueueConfig
from runequeue.errors import (
    ConfigError,
    DispatchError,
    DriverError,
    DriverUnavailable,
    DuplicateJobName,
    InvalidPayload,
    JobTimeout,
    LeaseExpired,
    PayloadError,
    PayloadTooLarge,
    RuneQueueError,
    UnknownJob,
)
from runequeue.job import Job
from runequeue.queue import Queue
from runequeue.worker import Worker, WorkerOptions

__all__ = [
    "ConfigError",
    "DispatchError",
    "DriverError",
    "DriverUnavailable",
    "DuplicateJobName",
    "InvalidPayload",
    "Job",
    "JobTimeout",
    "LeaseExpired",
    "PayloadError",
    "PayloadTooLarge",
    "Queue",
    "QueueConfig",
    "RuneQueueError",
    "UnknownJob",
    "Worker",
    "WorkerOptions",
]
