"""Queue backends. Each speaks the protocols in `runequeue.drivers.base` and is listed once in
`runequeue.drivers.registry`, which imports it only when a configuration names it."""

from __future__ import annotations

from typing import TYPE_CHECKING

from runequeue.drivers.registry import BACKENDS, Backend
from runequeue.errors import ConfigError

if TYPE_CHECKING:
    from runequeue.config import QueueConfig
    from runequeue.drivers.base import Driver, Producer

__all__ = ["backend_of", "open_driver", "open_producer", "require_a_queue"]


def backend_of(config: QueueConfig) -> Backend:
    """The backend ``config`` names; `ConfigError` saying what to set for ``sync``."""
    backend = BACKENDS.get(config.driver)
    if backend is None:
        raise _unsupported(config)
    return backend


def open_producer(config: QueueConfig) -> Producer:
    """Blocking access to the backend ``config`` names (``sync`` jobs are run by the facade)."""
    return backend_of(config).open_producer(config)


def open_driver(config: QueueConfig) -> Driver:
    """Asyncio access to the backend ``config`` names, for workers and ``dispatch_async``."""
    return backend_of(config).open_driver(config)


def require_a_queue(config: QueueConfig) -> None:
    """Raise `ConfigError` saying what to set when ``config``'s driver keeps no queue (sync)."""
    backend_of(config)


def _unsupported(config: QueueConfig) -> ConfigError:
    if config.driver == "sync":
        return ConfigError(
            "the sync driver runs jobs inside dispatch, so it keeps no queue: set "
            "QUEUE_DRIVER=database (or redis) in the environment or .env, or name the driver, "
            "as in `rune queue:work database --import myapp.jobs`"
        )
    return ConfigError(f"unknown queue driver {config.driver!r}")
