"""PostgreSQL's hot path: a worker's reserve, acknowledge and wait, each one statement on an
asyncio psycopg connection the worker holds.

Through SQLAlchemy in a thread, a reserve was a pool checkout with its ping, BEGIN, three
statements and COMMIT, about 2.5 ms for one job; here it is one round trip, run on the worker's
event loop (no thread hop), in autocommit, so the statement is its own transaction. psycopg
prepares a statement it has run five times, so the server plans it once.

Nothing is weakened for it: the lease is written (and committed, as ``synchronous_commit`` says)
before a job is handed out, an acknowledgement deletes only rows its lease still holds, and
``FOR UPDATE SKIP LOCKED`` keeps two workers off the same row. What this path does not handle
(an oversized payload to fail, a job recovered from a dead worker to run alone, a queue's lease
recovery) it leaves to `DatabaseQueue`, whose transaction does it as before.
"""

from __future__ import annotations

import contextlib
import importlib
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from runequeue.drivers.base import Reserved
from runequeue.errors import DriverError, DriverUnavailable

if TYPE_CHECKING:  # imported when a HotPath is made: psycopg is the optional `postgres` extra
    import psycopg
from runequeue.schema import LEASED, READY

# Epoch milliseconds from the statement's start: stable within the statement, so PostgreSQL can
# bound the ``jobs_ready`` index scan with it (``clock_timestamp()`` is read again at each row).
_NOW = "floor(extract(epoch from statement_timestamp()) * 1000)::bigint"

# Up to %(count)s ready jobs of %(queue)s whose payload can be handed out are leased and
# returned; ``picked`` counts the rows locked, so rows left unleased (oversized ones) are seen.
# With nothing ready, ``due_ms`` says when the earliest delayed job is due (NULL: none waits).
RESERVE = f"""
WITH picked AS (
    SELECT id, payload_bytes FROM jobs
    WHERE queue = %(queue)s AND state = {READY} AND available_at <= {_NOW}
    ORDER BY available_at, id
    LIMIT %(count)s
    FOR UPDATE SKIP LOCKED
), leased AS (
    UPDATE jobs
    SET state = {LEASED}, attempts = jobs.attempts + 1, lease_token = %(token)s,
        reserved_at = {_NOW}, lease_expires_at = {_NOW} + %(lease_ms)s
    FROM picked
    WHERE jobs.id = picked.id AND picked.payload_bytes <= %(max_bytes)s
    RETURNING jobs.id, jobs.uuid, jobs.payload, jobs.attempts, jobs.available_at
), counted AS (
    SELECT count(*) AS picked FROM picked
)
SELECT leased.uuid, leased.payload, leased.attempts, counted.picked,
    CASE WHEN counted.picked = 0 THEN (
        SELECT min(available_at) - {_NOW} FROM jobs WHERE queue = %(queue)s AND state = {READY}
    ) END AS due_ms
FROM counted LEFT JOIN leased ON true
ORDER BY leased.available_at, leased.id
"""

# Every finished job whose lease still holds it, deleted; returns the ids deleted.
ACK = f"""
DELETE FROM jobs USING unnest(%(ids)s::text[], %(tokens)s::text[]) AS done(uuid, token)
WHERE jobs.uuid = done.uuid AND jobs.lease_token = done.token AND jobs.state = {LEASED}
RETURNING jobs.uuid
"""


ErrorMapper = Callable[[], contextlib.AbstractContextManager[None]]


class CannotConnect(DriverUnavailable):
    """A connection of the hot path's own was refused (the server, or a role's connection
    limit): the caller can do the same work through its pool."""


@dataclass(frozen=True)
class Reservation:
    """What one reserve statement did."""

    jobs: list[Reserved]
    picked: int  # rows it locked; more than ``len(jobs)``: some could not be handed out
    due_s: float | None  # with nothing ready: seconds until the next delayed job is due


class HotPath:
    """asyncio psycopg connections: one to reserve, one to acknowledge, one to LISTEN on.

    Opened on first use and dropped on any error (the next call opens it again), so a restarted
    server costs the worker one failed call, which it backs off from as from any.
    """

    def __init__(self, engine: sa.Engine, errors: ErrorMapper, *, connect_timeout_s: int) -> None:
        self._psycopg: Any = importlib.import_module("psycopg")
        args, kwargs = engine.dialect.create_connect_args(engine.url)
        self._connect_args = (args, {**kwargs, "connect_timeout": connect_timeout_s})
        self._errors = errors
        # Reserve and acknowledge run at once (the worker's loop, its ack task): apart, neither
        # waits for the other's round trip.
        self._reserving: psycopg.AsyncConnection[Any] | None = None
        self._acking: psycopg.AsyncConnection[Any] | None = None
        self._listener: psycopg.AsyncConnection[Any] | None = None

    async def reserve(
        self, queue: str, count: int, *, token: str, lease_s: float, max_bytes: int
    ) -> Reservation:
        params = {"queue": queue, "count": count, "token": token,
                  "lease_ms": int(lease_s * 1000), "max_bytes": max_bytes}  # fmt: skip
        async with self._guarded("_reserving") as conn:
            rows = await (await conn.execute(RESERVE, params)).fetchall()
        picked, due_ms = rows[0][3], rows[0][4]
        jobs = [
            Reserved(queue, uuid, payload.encode(), attempts, token)
            for uuid, payload, attempts, _, _ in rows
            if uuid is not None
        ]
        return Reservation(jobs, picked, None if due_ms is None else max(float(due_ms), 0) / 1000)

    async def ack(self, items: Sequence[Reserved]) -> list[bool]:
        params = {"ids": [item.job_id for item in items], "tokens": [item.token for item in items]}
        async with self._guarded("_acking") as conn:
            deleted = {row[0] for row in await (await conn.execute(ACK, params)).fetchall()}
        return [item.job_id in deleted for item in items]

    async def listen(self, channel: str) -> None:
        """LISTEN on a connection of its own; a NOTIFY sent before this returns is not seen."""
        if self._listener is not None:
            return
        async with self._guarded("_listener") as conn:
            await conn.execute(f"LISTEN {channel}")

    @property
    def listening(self) -> bool:
        return self._listener is not None

    async def wait(self, timeout_s: float) -> None:
        """Until a NOTIFY arrives on the LISTEN connection, or ``timeout_s`` passes."""
        async with self._guarded("_listener") as conn:
            async for _ in conn.notifies(timeout=timeout_s, stop_after=1):
                return

    @contextlib.asynccontextmanager
    async def _guarded(self, slot: str) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
        """The connection in ``slot``, opened if need be; dropped if anything goes wrong with it
        (a cancelled wait included: its protocol state is unknown), errors mapped to the
        driver's."""
        with self._errors():
            conn = getattr(self, slot)
            if conn is None:
                conn = await self._open()
                setattr(self, slot, conn)
            try:
                yield conn
            except self._psycopg.Error as exc:
                await self._drop(slot)
                raise sa.exc.DBAPIError.instance(None, None, exc, self._psycopg.Error) from exc
            except BaseException:
                await self._drop(slot)
                raise

    async def _open(self) -> psycopg.AsyncConnection[Any]:
        args, kwargs = self._connect_args
        connection: Awaitable[psycopg.AsyncConnection[Any]] = self._psycopg.AsyncConnection.connect(
            *args, **kwargs, autocommit=True
        )
        try:
            return await connection
        except self._psycopg.Error as exc:
            try:
                with self._errors():  # its one-line message, with the password hidden
                    raise sa.exc.DBAPIError.instance(None, None, exc, self._psycopg.Error) from exc
            except DriverError as mapped:
                raise CannotConnect(str(mapped)) from exc
            raise AssertionError("unreachable: every DBAPIError is mapped") from exc

    async def _drop(self, slot: str) -> None:
        conn = getattr(self, slot)
        setattr(self, slot, None)
        if conn is not None:
            with contextlib.suppress(Exception):
                await conn.close()

    async def close(self) -> None:
        await self._drop("_reserving")
        await self._drop("_acking")
        await self._drop("_listener")
