"""A connection the producer holds for its script calls, past redis-py's per-call layers.

On loopback a Redis round trip costs about 20 µs, and redis-py's client path around it (pool
checkout and health check, the retry wrapper, observability hooks, response callbacks) costs about
as much again. A dispatch is exactly one script call, so the producer sends it on a connection of
its own and reads the reply itself; redis-py still opens the connection and parses the reply, and
hiredis (a dependency of redis[hiredis]) packs the command.

Nothing is given up for it: the reply is still awaited, so a dispatch that returns has been stored.
Anything out of the ordinary (another thread using the connection, a dropped connection, a
NOSCRIPT after SCRIPT FLUSH) raises `Fallback`, and the caller repeats the call through the normal
client, whose retry policy applies. Pushes are idempotent by job id, so repeating one is safe.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Protocol, cast

import hiredis
import redis

# After a failure the client path alone is used for a while: during an outage its bounded retries
# decide how long a dispatch takes to fail, without a connect attempt of ours added to each.
PAUSE_AFTER_FAILURE_S = 1.0

# hiredis's stub types the command as a one-item tuple; it takes any number of items.
_pack = cast(Callable[[tuple[Any, ...]], bytes], hiredis.pack_command)

Call = tuple[Sequence[str], Sequence[bytes | str | int | float]]  # (keys, args)


class _Connection(Protocol):
    """The part of a redis-py connection used here (its own annotations are incomplete)."""

    def connect(self) -> None: ...
    def disconnect(self) -> None: ...
    def send_command(self, *args: Any) -> None: ...
    def send_packed_command(self, command: list[bytes], check_health: bool = True) -> None: ...
    def read_response(self) -> Any: ...


class Fallback(Exception):
    """The direct path could not make the call; make it through the client instead."""


class ScriptLine:
    """One script, called on one held connection, from one thread at a time."""

    def __init__(self, client: redis.Redis, source: str) -> None:
        self._pool = client.connection_pool
        self._source = source
        self._sha = hashlib.sha1(source.encode()).hexdigest()
        self._lock = threading.Lock()
        self._connection: _Connection | None = None
        self._pid = os.getpid()
        self._resume_at = 0.0

    def call_many(self, calls: Sequence[Call]) -> list[Any]:
        """Send every call without waiting, then read every reply, in order.

        More than one call go in one MULTI/EXEC transaction, so they are stored all or none: Redis
        judges "out of memory" once, before EXEC, for every script in it (`RedisProducer.push`).
        """
        atomic = len(calls) > 1
        # hiredis packs in C what redis-py's packer checks argument by argument first.
        commands = [_pack(("EVALSHA", self._sha, len(keys), *keys, *args)) for keys, args in calls]
        if atomic:
            commands = [_pack(("MULTI",)), *commands, _pack(("EXEC",))]
        with self._held() as connection:
            connection.send_packed_command(commands, check_health=False)
            replies = [connection.read_response() for _ in commands]
            if not atomic:
                return replies
            results = cast(list[Any], replies[-1])
            for result in results:
                if isinstance(result, redis.ResponseError):
                    raise result  # a Fallback: the client path repeats it, and says why
            return results

    @contextlib.contextmanager
    def _held(self) -> Iterator[_Connection]:
        # A second thread dispatching at the same moment takes the client's pool instead of
        # queueing behind this one.
        if not self._lock.acquire(blocking=False):
            raise Fallback("the direct connection is busy")
        try:
            if time.monotonic() < self._resume_at:
                raise Fallback("the direct connection failed a moment ago")
            yield self._connect()
        except (redis.RedisError, OSError) as exc:
            # Replies may still be unread on it: it cannot be trusted again.
            self._drop()
            self._resume_at = time.monotonic() + PAUSE_AFTER_FAILURE_S
            raise Fallback(str(exc)) from exc
        except BaseException:  # interrupted mid-call (KeyboardInterrupt): same reason
            self._drop()
            raise
        finally:
            self._lock.release()

    def _connect(self) -> _Connection:
        if self._pid != os.getpid():  # a forked child must never share its parent's socket
            self._connection, self._pid = None, os.getpid()
        connection = self._connection
        if connection is None:
            connection = cast(_Connection, self._pool.make_connection())
            connection.connect()
            connection.send_command("SCRIPT", "LOAD", self._source)
            connection.read_response()
            self._connection = connection
        return connection

    def _drop(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            with contextlib.suppress(Exception):
                connection.disconnect()

    def close(self) -> None:
        with self._lock:
            self._drop()
