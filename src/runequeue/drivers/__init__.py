"""Queue backends. Each speaks the protocols in `runequeue.drivers.base`."""

from __future__ import annotations

from runequeue.config import QueueConfig
from runequeue.drivers.base import Driver, Producer
from runequeue.drivers.database import DatabaseDriver, DatabaseQueue
from runequeue.drivers.redis import RedisDriver, RedisProducer
from runequeue.errors import ConfigError

__all__ = ["open_driver", "open_producer"]


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


def _unsupported(config: QueueConfig) -> ConfigError:
    if config.driver == "sync":
        return ConfigError("the sync driver runs jobs inside dispatch; there is no queue to work")
    return ConfigError(f"unknown queue driver {config.driver!r}")
