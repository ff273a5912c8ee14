"""`QueueConfig`: one frozen object saying where jobs go; the only reader of the environment."""

from __future__ import annotations

import dataclasses
import functools
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from dotenv import dotenv_values

from runequeue.drivers.registry import DRIVER_NAMES
from runequeue.errors import ConfigError
from runequeue.payload import Codec
from runequeue.urls import hide_password

# A name of `runequeue.drivers.registry.DRIVER_NAMES`: "sync", "redis", "database", "memory".
DriverName = str

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
DEFAULT_DATABASE_URL = "sqlite:///runequeue.sqlite3"
DEFAULT_LEASE_S = 30.0


@dataclasses.dataclass(frozen=True)
class QueueConfig:
    """Where and how jobs are stored.

    Attributes:
        driver: ``sync`` runs jobs inside dispatch; ``redis`` and ``database`` store them for
            workers; ``memory`` keeps them in this process, for a worker in the same process
            (tests).
        redis_url: the Redis server for the ``redis`` driver (``rediss://`` for TLS;
            ``redis+cluster://`` and ``redis+sentinel://``: `runequeue.drivers.redis_connect`).
        queue_name: the queue a job goes to when neither the dispatch nor the job class names one.
        database_url: SQLAlchemy URL of the database (failed jobs; the ``database`` driver).
        retry_after_s: lease length; a reserved job whose worker stopped renewing it is handed out
            again this many seconds later. Running workers renew it, so long jobs are not run
            twice.
        redis_prefix: first part of every Redis key; give each application (or test) its own.
        max_payload_bytes: encoded jobs larger than this are refused at dispatch, and stored ones
            larger than this are failed at reserve without being read.
        dispatch_timeout_s: how long a dispatch may spend trying to reach the backend before it
            raises ``DispatchError``.
        signing_keys: ``(key id, secret)`` pairs; when set, payloads are signed with the first and
            verified with any of them before they are parsed (``QUEUE_SIGNING_KEYS=id:secret,...``).
    """

    driver: DriverName = "sync"
    redis_url: str = DEFAULT_REDIS_URL
    queue_name: str = "default"
    database_url: str = DEFAULT_DATABASE_URL
    retry_after_s: float = DEFAULT_LEASE_S
    redis_prefix: str = "queues"
    max_payload_bytes: int = 1024 * 1024
    dispatch_timeout_s: float = 2.0
    signing_keys: tuple[tuple[str, str], ...] = dataclasses.field(default=(), repr=False)

    def __repr__(self) -> str:
        # A config ends up in logs and tracebacks: URLs are shown without their passwords, and
        # the signing keys not at all.
        shown = {
            field.name: getattr(self, field.name)
            for field in dataclasses.fields(self)
            if field.repr
        }
        shown["redis_url"] = hide_password(self.redis_url)
        shown["database_url"] = hide_password(self.database_url)
        return f"QueueConfig({', '.join(f'{name}={value!r}' for name, value in shown.items())})"

    def __post_init__(self) -> None:
        if self.driver not in DRIVER_NAMES:
            raise ConfigError(
                f"unknown queue driver {self.driver!r}; expected one of {', '.join(DRIVER_NAMES)}"
            )
        if self.retry_after_s <= 0:
            raise ConfigError("retry_after_s must be positive")
        if not self.queue_name:
            raise ConfigError("queue_name must not be empty")
        if self.driver == "redis":
            _check_redis_url(self.redis_url)

    @functools.cached_property
    def codec(self) -> Codec:
        """Encodes, signs, verifies and decodes this configuration's payloads."""
        return Codec(self.max_payload_bytes, self.signing_keys)

    def with_driver(self, driver: str) -> QueueConfig:
        """The same configuration on another driver (a job's or a worker's ``connection``)."""
        return dataclasses.replace(self, driver=driver)

    @classmethod
    def from_env(
        cls,
        environ: Mapping[str, str] | None = None,
        *,
        env_file: str | Path | None = ".env",
        **overrides: Any,
    ) -> QueueConfig:
        """Read ``QUEUE_DRIVER`` (alias ``QUEUE_CONNECTION``), ``REDIS_URL``, ``QUEUE_NAME``,
        ``DATABASE_URL``, ``QUEUE_RETRY_AFTER``, ``QUEUE_REDIS_PREFIX``, ``QUEUE_SIGNING_KEYS`` and
        ``QUEUE_MAX_PAYLOAD_BYTES``.

        Values come from ``environ`` (default ``os.environ``), then a ``.env`` file in the working
        directory for names the environment lacks; keyword ``overrides`` (not ``None``) win over
        both.
        """
        values = settings_source(environ, env_file)
        settings: dict[str, Any] = {}
        driver = values.get("QUEUE_DRIVER") or values.get("QUEUE_CONNECTION")
        if driver:
            settings["driver"] = driver.strip().lower()
        for env_name, field in _STRING_SETTINGS.items():
            if values.get(env_name):
                settings[field] = values[env_name]
        if values.get("QUEUE_SIGNING_KEYS"):
            settings["signing_keys"] = _signing_keys(values["QUEUE_SIGNING_KEYS"])
        if values.get("QUEUE_MAX_PAYLOAD_BYTES"):
            settings["max_payload_bytes"] = _bytes(
                "QUEUE_MAX_PAYLOAD_BYTES", values["QUEUE_MAX_PAYLOAD_BYTES"]
            )
        if values.get("QUEUE_RETRY_AFTER"):
            settings["retry_after_s"] = _number("QUEUE_RETRY_AFTER", values["QUEUE_RETRY_AFTER"])
        settings.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**settings)


_STRING_SETTINGS = {
    "REDIS_URL": "redis_url",
    "QUEUE_NAME": "queue_name",
    "DATABASE_URL": "database_url",
    "QUEUE_REDIS_PREFIX": "redis_prefix",
}


def _signing_keys(text: str) -> tuple[tuple[str, str], ...]:
    keys = []
    for entry in filter(None, (part.strip() for part in text.split(","))):
        key_id, colon, secret = entry.partition(":")
        if not colon or not key_id or not secret:
            raise ConfigError("QUEUE_SIGNING_KEYS must be id:secret pairs separated by commas")
        keys.append((key_id, secret))
    return tuple(keys)


def _check_redis_url(url: str) -> None:
    # Imported here: the config is read by every driver, redis-py only by Redis's.
    from runequeue.drivers.redis_connect import parse

    parse(url)


def settings_source(
    environ: Mapping[str, str] | None = None, env_file: str | Path | None = ".env"
) -> dict[str, str]:
    """Every setting by name: ``environ`` (default ``os.environ``) over the ``.env`` file."""
    values: dict[str, str] = {}
    if env_file is not None and Path(env_file).is_file():
        values.update({k: v for k, v in dotenv_values(env_file).items() if v is not None})
    values.update(os.environ if environ is None else environ)
    return values


def _number(name: str, text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise ConfigError(f"{name} must be a number of seconds, got {text!r}") from None


# Decimal and binary units, as `ls` and `df` spell them; a bare number is bytes.
_BYTE_UNITS = {
    "": 1, "b": 1,
    "kb": 1000, "mb": 1000**2, "gb": 1000**3,
    "kib": 1024, "mib": 1024**2, "gib": 1024**3,
}  # fmt: skip


def _bytes(name: str, text: str) -> int:
    number = text.strip().rstrip("bBiIkKmMgG ")
    unit = text.strip()[len(number) :].strip().lower()
    try:
        size = float(number) * _BYTE_UNITS[unit]
    except (ValueError, KeyError):
        raise ConfigError(
            f"{name} must be a size in bytes, such as 1048576, 1MiB or 512KB; got {text!r}"
        ) from None
    if size < 1:
        raise ConfigError(f"{name} must be at least 1 byte; got {text!r}")
    return int(size)


def imports_from_env(
    environ: Mapping[str, str] | None = None, env_file: str | Path | None = ".env"
) -> list[str]:
    """Modules named by ``RUNE_IMPORTS`` (comma-separated, environment or ``.env``)."""
    text = settings_source(environ, env_file).get("RUNE_IMPORTS", "")
    return [name.strip() for name in text.split(",") if name.strip()]
