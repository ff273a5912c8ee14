"""``dispatch_async``'s path to Redis: one script, called on one held asyncio connection, with
the calls made at once from one event loop sent together.

A web app dispatches from many requests at once. Each call here is one EVALSHA, packed by
hiredis; the first caller sends its call and reads the reply, and every call made while that
round trip was out goes in the next write, their replies read in order. So 50 requests in flight
share a few round trips instead of queueing for 50, and a lone dispatch costs one command and
little more than a PING of redis.asyncio (whose per-call layers, pool checkout, retry wrapper and
response callbacks, cost as much as the round trip itself).

"Returned means stored" holds: each caller waits for its own reply. Anything out of the ordinary
(a dropped connection, a caller cancelled mid-round-trip, which leaves replies unread) drops the
connection and raises `Fallback` in every caller it touched; each repeats its call through the
client, whose retry policy applies. Pushes are idempotent by job id, so a repeat is safe.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol, cast

import hiredis
import redis
import redis.asyncio as aioredis

from runequeue.drivers.held import PAUSE_AFTER_FAILURE_S, Fallback

# hiredis's stub types the command as a one-item tuple; it takes any number of items.
_pack = cast(Callable[[tuple[Any, ...]], bytes], hiredis.pack_command)


class _Connection(Protocol):
    """The part of a redis.asyncio connection used here (its own annotations are incomplete)."""

    async def connect(self) -> None: ...
    async def disconnect(self) -> None: ...
    async def send_command(self, *args: Any) -> None: ...
    async def send_packed_command(self, command: list[bytes], check_health: bool = ...) -> None: ...
    async def read_response(self) -> Any: ...


_Waiting = tuple[bytes, "asyncio.Future[Any]"]


class AsyncScriptLine:
    """One script on one held connection of one event loop; concurrent calls share writes."""

    def __init__(self, client: aioredis.Redis, source: str) -> None:
        self._pool = client.connection_pool
        self._source = source
        self._sha = hashlib.sha1(source.encode()).hexdigest()
        self._connection: _Connection | None = None
        self._waiting: list[_Waiting] = []
        self._sending = False  # a caller is sending and reading: new calls wait for its next write
        self._resume_at = 0.0

    async def call(self, keys: Sequence[str], args: Sequence[bytes | str | int | float]) -> Any:
        """The script's reply to one call; raises `Fallback` where the client must repeat it,
        and a Redis error reply (NOSCRIPT among them) as redis-py would."""
        if time.monotonic() < self._resume_at:
            raise Fallback("the direct connection failed a moment ago")
        reply: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._waiting.append((_pack(("EVALSHA", self._sha, len(keys), *keys, *args)), reply))
        if not self._sending:
            await self._send_all()
        return await reply

    async def _send_all(self) -> None:
        """Send what waits, read its replies, and again while calls arrived meanwhile."""
        self._sending = True
        sent: list[_Waiting] = []
        try:
            while self._waiting:
                sent, self._waiting = self._waiting, []
                connection = await self._connect()
                await connection.send_packed_command([c for c, _ in sent], check_health=False)
                for _, reply in sent:
                    try:
                        result = await connection.read_response()
                    except redis.ResponseError as exc:  # an error reply: the connection is fine
                        _settle(reply, exc)
                    else:
                        _settle(reply, result)
                sent = []
        except BaseException as exc:  # a dropped connection, or this caller cancelled mid-read
            await self._drop()
            failed = Fallback(str(exc) or type(exc).__name__)
            for _, reply in [*sent, *self._waiting]:
                _settle(reply, failed)
            self._waiting = []
            if not isinstance(exc, Exception):
                raise
        finally:
            self._sending = False

    async def _connect(self) -> _Connection:
        connection = self._connection
        if connection is None:
            connection = cast(_Connection, self._pool.make_connection())  # type: ignore[no-untyped-call]
            await connection.connect()
            await connection.send_command("SCRIPT", "LOAD", self._source)
            await connection.read_response()
            self._connection = connection
        return connection

    async def _drop(self) -> None:
        self._resume_at = time.monotonic() + PAUSE_AFTER_FAILURE_S
        connection, self._connection = self._connection, None
        if connection is not None:
            # Closing a broken connection: nothing more can be lost.
            with contextlib.suppress(Exception):
                await connection.disconnect()

    async def close(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            await connection.disconnect()


def _settle(reply: asyncio.Future[Any], outcome: Any) -> None:
    """Hand ``outcome`` (a result, or an exception to raise) to a caller still waiting for it."""
    if reply.done():  # the caller was cancelled: nobody reads it
        return
    if isinstance(outcome, BaseException):
        reply.set_exception(outcome)
    else:
        reply.set_result(outcome)
