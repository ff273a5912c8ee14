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

import hashlib
from collections.abc import Callable, Sequence
from typing import Any, Protocol, cast

import hiredis
import redis

from runequeue.drivers.held import HeldConnection

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


class ScriptLine:
    """One script, called on one held connection, from one thread at a time."""

    def __init__(self, client: redis.Redis, source: str) -> None:
        self._pool = client.connection_pool
        self._source = source
        self._sha = hashlib.sha1(source.encode()).hexdigest()
        self._line = HeldConnection(
            self._connect, lambda connection: connection.disconnect(), (redis.RedisError, OSError)
        )

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
        with self._line.held() as connection:
            connection.send_packed_command(commands, check_health=False)
            replies = [connection.read_response() for _ in commands]
            if not atomic:
                return replies
            results = cast(list[Any], replies[-1])
            for result in results:
                if isinstance(result, redis.ResponseError):
                    raise result  # a Fallback: the client path repeats it, and says why
            return results

    def _connect(self) -> _Connection:
        connection = cast(_Connection, self._pool.make_connection())
        connection.connect()
        connection.send_command("SCRIPT", "LOAD", self._source)
        connection.read_response()
        return connection

    def close(self) -> None:
        self._line.close()
