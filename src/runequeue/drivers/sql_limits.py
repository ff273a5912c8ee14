"""`Limits` on the database driver: counters in ``job_limits``, locks in ``job_locks`` (under the
queue name "", which no queue has). Times are the database's clock (SQLite: this host's)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any

import sqlalchemy as sa

from runequeue.drivers import sql
from runequeue.drivers.base import Limits
from runequeue.schema import job_limits

LOCKS = ""  # the job_locks "queue" of middleware locks
DEADLOCK_TRIES = 5


class DatabaseLimits:
    """`Limits` on an engine of the database driver's; each call is one transaction, run in a
    thread."""

    def __init__(
        self, engine: sa.Engine, errors: Callable[[], contextlib.AbstractContextManager[None]]
    ) -> None:
        self.engine = engine
        self.dialect = engine.dialect.name
        self._errors = errors

    async def hit(self, key: str, window_s: float) -> tuple[int, float]:
        return await asyncio.to_thread(self._retried, self._hit, key, int(window_s * 1000))

    async def hits(self, key: str) -> tuple[int, float]:
        return await asyncio.to_thread(self._hits, key)

    async def clear(self, key: str) -> None:
        await asyncio.to_thread(self._write, sa.delete(job_limits).where(_key(key)))

    async def lock(self, key: str, owner: str, ttl_s: float) -> bool:
        return await asyncio.to_thread(self._retried, self._lock, key, owner, int(ttl_s * 1000))

    async def unlock(self, key: str, owner: str) -> None:
        await asyncio.to_thread(self._write, sql.free_lock(LOCKS, key, owner))

    def _retried(self, call: Callable[..., Any], *args: Any) -> Any:
        # MySQL may pick one of two transactions racing for a new row as a deadlock victim.
        with self._errors():
            for attempt in range(DEADLOCK_TRIES):
                try:
                    return call(*args)
                except sa.exc.DBAPIError as exc:
                    if not sql.deadlock(exc) or attempt == DEADLOCK_TRIES - 1:
                        raise
            raise AssertionError("unreachable")

    def _hit(self, key: str, window_ms: int) -> tuple[int, float]:
        now = sql.now_ms(self.dialect)
        with self.engine.begin() as conn:
            row = {"limit_key": key, "hits": 0, "resets_at": now + window_ms}
            conn.execute(sql.insert_if_absent(self.dialect, job_limits, row))
            expired = conn.execute(
                sa.select(job_limits.c.resets_at <= now).where(_key(key)).with_for_update()
            ).scalar_one()
            values: dict[str, Any] = {"hits": job_limits.c.hits + 1}
            if expired:
                values = {"hits": 1, "resets_at": now + window_ms}
            conn.execute(sa.update(job_limits).where(_key(key)).values(**values))
            return self._read(conn, key)

    def _hits(self, key: str) -> tuple[int, float]:
        with self._errors(), self.engine.connect() as conn:
            return self._read(conn, key)

    def _read(self, conn: sa.Connection, key: str) -> tuple[int, float]:
        now = sql.now_ms(self.dialect)
        row = conn.execute(
            sa.select(job_limits.c.hits, (job_limits.c.resets_at - now).label("left"))
            .where(_key(key))
        ).first()  # fmt: skip
        if row is None or row.left <= 0:
            return 0, 0.0
        return int(row.hits), int(row.left) / 1000

    def _lock(self, key: str, owner: str, ttl_ms: int) -> bool:
        with self.engine.begin() as conn:
            conn.execute(sql.take_lock(self.dialect, LOCKS, key, owner, ttl_ms))
            holder = conn.execute(sql.lock_holder(self.dialect, LOCKS, key)).first()
            if holder is not None and holder.expired:
                conn.execute(sql.take_expired_lock(self.dialect, LOCKS, key, owner, ttl_ms))
                holder = conn.execute(sql.lock_holder(self.dialect, LOCKS, key)).first()
            return holder is not None and str(holder.job_id) == owner

    def _write(self, statement: sa.Executable) -> None:
        with self._errors(), self.engine.begin() as conn:
            conn.execute(statement)


def _key(key: str) -> sa.ColumnElement[bool]:
    return job_limits.c.limit_key == key


_check: type[Limits] = DatabaseLimits
