"""Queue backends. Each speaks the protocols in `runequeue.drivers.base`."""

from __future__ import annotations

from runequeue.config import QueueConfig
from runequeue.drivers.base import Driver, Producer
from runequeue.drivers.database import DatabaseDriver, DatabaseQueue
from runequeue.drivers.redis import RedisDriver, RedisProducer
from runequeue.errors import ConfigError

__all__ = ["open_driver", "open_producer", "require_a_queue"]


def open_producer(config: QueueConfig) -> Producer:
    """Blocking access to the backend ``config`` names (``sync`` jobs are run by the facade)."""
    if config.driver == "redis":
        return RedisProducer(
            config.redis_url, prefix=config.redis_prefix, timeout_s=config.dispatch_timeout_s
        )
    if config.driver == "database":
        return DatabaseQueue(config.database_url)
    raise _unsupported(config)


def open_driver(config: QueueConfig) -> Driver:
    """Asyncio access to the backend ``config`` names, for workers and ``dispatch_async``."""
    if config.driver == "redis":
        return RedisDriver(
            config.redis_url,
            prefix=config.redis_prefix,
            max_payload_bytes=config.max_payload_bytes,
        )
    if config.driver == "database":
        return DatabaseDriver(config.database_url, max_payload_bytes=config.max_payload_bytes)
    raise _unsupported(config)


def require_a_queue(config: QueueConfig) -> None:
    """Raise `ConfigError` saying what to set when ``config``'s driver keeps no queue (sync)."""
    if config.driver == "sync":
        raise _unsupported(config)


def _unsupported(config: QueueConfig) -> ConfigError:
    if config.driver == "sync":
        return ConfigError(
            "the sync driver runs jobs inside dispatch, so it keeps no queue: set "
            "QUEUE_DRIVER=database (or redis) in the environment or .env, or name the driver, "
            "as in `rune queue:work database --import myapp.jobs`"
        )
    return ConfigError(f"unknown queue driver {config.driver!r}")
