"""The backends a configuration can name: one line each.

A backend is a module with two functions, ``open_producer(config) -> Producer`` and
``open_driver(config) -> Driver`` (see `runequeue.drivers.base`). It is imported the first time a
configuration names it, so a web app that dispatches to Redis never loads SQLAlchemy's jobs code,
and one on the database driver never loads redis-py. The conformance and chaos suites run on every
backend listed here. ``sync`` is not one: it keeps no queue, and `Queue` runs its jobs at once.
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable
from typing import TYPE_CHECKING, cast

if TYPE_CHECKING:
    from runequeue.config import QueueConfig
    from runequeue.drivers.base import Driver, Producer


@dataclasses.dataclass(frozen=True, slots=True)
class Backend:
    """Where a backend's code is, and what the rest of runequeue must know about it.

    Attributes:
        module: the module with ``open_producer`` and ``open_driver``.
        shared: other processes see its jobs (a worker started with ``rune queue:work``).
        jobs_table: its jobs live in the ``jobs`` table that ``rune migrate`` creates.
    """

    module: str
    shared: bool = True
    jobs_table: bool = False

    def open_producer(self, config: QueueConfig) -> Producer:
        return cast("Callable[[QueueConfig], Producer]", self._function("open_producer"))(config)

    def open_driver(self, config: QueueConfig) -> Driver:
        return cast("Callable[[QueueConfig], Driver]", self._function("open_driver"))(config)

    def _function(self, name: str) -> object:
        return getattr(importlib.import_module(self.module), name)


BACKENDS: dict[str, Backend] = {
    "redis": Backend("runequeue.drivers.redis"),
    "database": Backend("runequeue.drivers.database", jobs_table=True),
    "memory": Backend("runequeue.drivers.memory", shared=False),
}

# Every value of QUEUE_DRIVER: the backends, and ``sync``, which runs each job inside dispatch.
DRIVER_NAMES: tuple[str, ...] = ("sync", *BACKENDS)
