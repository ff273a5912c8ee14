"""`Control` on the database driver: rows of ``job_control``, one per value, read while
unexpired (the database's clock; SQLite: this host's)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

import sqlalchemy as sa
from sqlalchemy.dialects import mysql, postgresql, sqlite

from runequeue.drivers import sql
from runequeue.drivers.base import Control
from runequeue.schema import job_control


class DatabaseControl:
    """`Control` on an engine of the database driver's; each call one transaction, in a thread."""

    def __init__(
        self, engine: sa.Engine, errors: Callable[[], contextlib.AbstractContextManager[None]]
    ) -> None:
        self.engine = engine
        self.dialect = engine.dialect.name
        self._errors = errors

    async def put(self, namespace: str, name: str, value: str, ttl_s: float | None = None) -> None:
        await asyncio.to_thread(self._put, namespace, name, value, ttl_s)

    async def get_all(self, namespace: str) -> dict[str, str]:
        return await asyncio.to_thread(self._get_all, namespace)

    async def delete(self, namespace: str, name: str) -> None:
        await asyncio.to_thread(self._delete, namespace, name)

    def _put(self, namespace: str, name: str, value: str, ttl_s: float | None) -> None:
        expires = None if ttl_s is None else sql.now_ms(self.dialect) + int(ttl_s * 1000)
        row = {"namespace": namespace, "name": name, "value": value, "expires_at": expires}
        changed = {"value": value, "expires_at": expires}
        statement: sa.Executable
        if self.dialect == "sqlite":
            insert = sqlite.insert(job_control).values(row)
            statement = insert.on_conflict_do_update(index_elements=["namespace", "name"],
                                                     set_=changed)  # fmt: skip
        elif self.dialect == "postgresql":
            pg_insert = postgresql.insert(job_control).values(row)
            statement = pg_insert.on_conflict_do_update(index_elements=["namespace", "name"],
                                                        set_=changed)  # fmt: skip
        else:
            statement = mysql.insert(job_control).values(row).on_duplicate_key_update(changed)
        with self._errors(), self.engine.begin() as conn:
            conn.execute(statement)

    def _get_all(self, namespace: str) -> dict[str, str]:
        c = job_control.c
        live = sa.or_(c.expires_at.is_(None), c.expires_at > sql.now_ms(self.dialect))
        query = sa.select(c.name, c.value).where(c.namespace == namespace, live)
        with self._errors(), self.engine.begin() as conn:
            conn.execute(sa.delete(job_control).where(c.namespace == namespace, sa.not_(live)))
            return {str(row.name): str(row.value) for row in conn.execute(query)}

    async def purge_expired(self) -> None:
        await asyncio.to_thread(self._purge_expired)

    def _purge_expired(self) -> None:
        c = job_control.c
        with self._errors(), self.engine.begin() as conn:
            conn.execute(sa.delete(job_control).where(c.expires_at <= sql.now_ms(self.dialect)))

    def _delete(self, namespace: str, name: str) -> None:
        c = job_control.c
        with self._errors(), self.engine.begin() as conn:
            conn.execute(sa.delete(job_control).where(c.namespace == namespace, c.name == name))


_check: type[Control] = DatabaseControl
