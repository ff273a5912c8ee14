"""What a worker checks before it takes a job: that it knows some job classes, that its tables
exist, and (with ``--strict``) that its backend is reachable and keeps jobs safe.

Each problem is refused with one line that says what to do, before anything is reserved.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

from runequeue import job
from runequeue.config import QueueConfig
from runequeue.drivers import backend_of
from runequeue.drivers.base import ChecksSettings, Driver
from runequeue.errors import ConfigError, DriverError
from runequeue.schema import check_tables

log = logging.getLogger("runequeue.worker")


def require_job_classes() -> None:
    """Refuse a worker that knows no job class: every job would fail as UnknownJob (a worker
    started without ``--import``)."""
    if not job.registered_count():
        raise ConfigError(
            "no job classes are registered: name the modules that define them with "
            "--import myapp.jobs or RUNE_IMPORTS=myapp.jobs"
        )


async def require_tables(config: QueueConfig) -> None:
    """Raise `MissingTable` (run ``rune migrate``) when a table the worker needs is missing."""
    tables = ["failed_jobs"]
    if backend_of(config).jobs_table:
        tables += ["jobs", "job_locks", "job_batches", "job_limits", "job_control"]
    await asyncio.to_thread(check_tables, config.database_url, tables)


def require_queue_names(config: QueueConfig, queues: Sequence[str]) -> None:
    """Refuse queue names the backend cannot hold (on Redis: a brace, which would break the
    hash tag that keeps a queue's keys in one Cluster slot)."""
    if config.driver == "redis":
        from runequeue.drivers.redis_keys import check_queue_name  # redis-py only for Redis

        for queue in queues:
            check_queue_name(queue)


async def check_backend(driver: Driver, *, strict: bool) -> None:
    """Log the backend's settings that could lose jobs; with ``strict``, refuse to start on any,
    or when the backend cannot be reached at all."""
    if not isinstance(driver, ChecksSettings):
        return  # durability is the backend's own (a database's fsync), or there is none to check
    try:
        warnings = await driver.check()
    except DriverError as exc:
        if strict:
            raise ConfigError(f"refusing to start with --strict: {exc}") from exc
        log.warning("could not check the backend's settings: %s", exc)
        return
    for warning in warnings:
        log.warning("WARNING %s", warning)
    if warnings and strict:
        raise ConfigError("refusing to start with --strict: " + "; ".join(warnings))
