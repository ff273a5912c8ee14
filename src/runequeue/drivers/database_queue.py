"""The database driver's blocking side: `DatabaseQueue` (dispatch, the worker's verbs run in
threads, lease renewal) over the ``jobs`` table; `runequeue.drivers.database` is the asyncio
driver over it, and says how the pieces fit."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import secrets
import threading
import time
from collections.abc import Iterator, Sequence
from typing import Any

import sqlalchemy as sa

from runequeue.db_engine import create_engine, mapped_errors, normalized_url
from runequeue.drivers import sql
from runequeue.drivers.base import (
    Batch,
    BatchStore,
    Buried,
    Outgoing,
    QueueCounts,
    Reserved,
)
from runequeue.drivers.held import Fallback
from runequeue.drivers.postgres_line import InsertLine
from runequeue.drivers.sql_batches import DatabaseBatches, move_batch
from runequeue.errors import (
    DatabaseAccessDenied,
    DispatchError,
    DriverError,
    DriverUnavailable,
    MissingDatabase,
    MissingTable,
)
from runequeue.payload import DEFAULT_MAX_BYTES
from runequeue.schema import LEASED, READY, RECOVERED

NOTIFY_CHANNEL = sql.NOTIFY_CHANNEL
DEADLOCK_TRIES = 5  # a unique dispatch chosen as a deadlock victim is tried again this often
RECOVER_EVERY_S = 1.0  # reserve also recovers expired leases, at most this often per queue
FIRST_POLL_S = 0.05
LISTEN_AGAIN_S = 30.0  # after a failed LISTEN, the worker polls and tries again this often
# The LISTEN connection's connect timeout: the engine's own (runequeue.db_engine.create_engine),
# so an unreachable server cannot hold up a reserve, or the worker's exit, for the OS's TCP timeout.
LISTEN_CONNECT_TIMEOUT_S = 5

log = logging.getLogger("runequeue.worker")


def notified(url: str) -> bool:
    """Whether workers on the database at ``url`` are woken by PostgreSQL's NOTIFY; else they poll.

    Only through psycopg 3, whose connections deliver notifications while waiting; the same rule
    on psycopg2 would need a select() loop of its own, so it polls.
    """
    parsed = normalized_url(url)
    return parsed.get_backend_name() == "postgresql" and parsed.get_driver_name() == "psycopg"


def store_jobs(conn: sa.Connection, items: Sequence[Outgoing]) -> int:
    """Insert ``items`` into ``jobs`` in ``conn``'s transaction; returns how many were stored.

    A job id already in the table is skipped, not counted. On PostgreSQL a stored job wakes idle
    workers: the NOTIFY is delivered when the transaction commits, when the jobs are visible.
    """
    if conn.dialect.name == "postgresql":  # its INSERT sends the NOTIFY itself
        insert = sql.insert_jobs_from_json()
        return sum(len(conn.execute(insert, rows).all()) for rows in sql.job_documents(items))
    return int(conn.execute(sql.insert_jobs(conn.dialect.name), sql.job_rows(items)).rowcount)


def _notify(conn: sa.Connection) -> None:
    """Wake idle PostgreSQL workers when ``conn``'s transaction commits (jobs visible by then).

    Every path that makes a job runnable calls this, but for a dispatch, whose INSERT sends the
    NOTIFY itself (`sql.insert_jobs_from_json`); other databases are polled.
    """
    if conn.dialect.name == "postgresql":
        conn.execute(sa.select(sa.func.pg_notify(NOTIFY_CHANNEL, "")))


class DatabaseQueue:
    """Blocking access to the ``jobs`` table: dispatch, lease renewal, and the worker's verbs."""

    def __init__(
        self, url: str, *, max_payload_bytes: int = DEFAULT_MAX_BYTES, held_dispatch: bool = False
    ) -> None:
        """``held_dispatch``: a producer's, whose dispatches on PostgreSQL (psycopg 3) run on a
        connection held for them (`runequeue.drivers.postgres_line`). A worker's has none: its
        connections of its own are the hot path's, and one more could take the last a role's
        connection limit leaves to its pool."""
        self.url = url
        self.max_payload_bytes = max_payload_bytes
        with self.mapped_errors():
            self.engine = create_engine(url, create=False)  # `rune migrate` creates it
        self.dialect = self.engine.dialect.name
        self._autocommit = self.engine.execution_options(isolation_level="AUTOCOMMIT")
        self._line_wanted = held_dispatch and notified(url)
        self._line: InsertLine | None = None
        self._recovered_at: dict[str, float] = {}
        self._recovered_waiting: dict[str, bool] = {}
        # Held while a recovery or a reserve of recovered jobs decides `_recovered_waiting`, so
        # that one running in another thread (the sweep's, a reserve's) cannot overwrite it with
        # what it saw before the other committed.
        self._recovery = threading.Lock()

    @contextlib.contextmanager
    def mapped_errors(self) -> Iterator[None]:
        """Database errors as driver errors: dispatch and the worker handle `DriverError`.

        A database set up wrong (no ``jobs`` table, no database, a refused user) is one too, with
        the same one-line advice, so ``except DispatchError`` catches it and a worker backs off
        and says why instead of crashing.
        """
        try:
            with mapped_errors(self.url, unavailable=DriverUnavailable, failed=DriverError):
                yield
        except (MissingTable, MissingDatabase, DatabaseAccessDenied) as exc:
            raise DriverError(str(exc)) from exc

    def push(self, items: Sequence[Outgoing]) -> int:
        line = self._insert_line()
        if line is not None:
            with contextlib.suppress(Fallback):  # then through the pool, which says what failed
                return line.run(list(sql.job_documents(items)))
        try:
            with self.mapped_errors():
                if self.dialect == "postgresql" and len(items) <= sql.PG_ROWS_PER_INSERT:
                    # One statement, its own transaction: no BEGIN and COMMIT round trips.
                    with self._autocommit.connect() as conn:
                        return store_jobs(conn, items)
                with self.engine.begin() as conn:  # several statements: all or none
                    return store_jobs(conn, items)
        except DriverError as exc:
            raise DispatchError(f"could not dispatch: {exc}") from exc

    def push_unique(self, item: Outgoing) -> str:
        """Store a unique job unless another holds its lock: one transaction, which takes the
        lock and stores the job, or reads who holds it."""
        try:
            with self.mapped_errors():
                for attempt in range(DEADLOCK_TRIES):
                    try:
                        return self._push_unique_once(item)
                    except sa.exc.DBAPIError as exc:
                        # MySQL may pick one of two dispatches racing for a lock as a deadlock
                        # victim and roll it back: taken again, it finds the other's lock.
                        if not sql.deadlock(exc) or attempt == DEADLOCK_TRIES - 1:
                            raise
                raise AssertionError("unreachable")
        except DriverError as exc:
            raise DispatchError(f"could not dispatch: {exc}") from exc

    def _push_unique_once(self, item: Outgoing) -> str:
        assert item.unique_key is not None
        ttl_ms = max(int(item.unique_for_s * 1000), 1)
        queue, key = item.queue, item.unique_key
        with self.engine.begin() as conn:
            conn.execute(sql.take_lock(self.dialect, queue, key, item.job_id, ttl_ms))
            # Read back rather than trust row counts (psycopg reports -1 for an insert that did
            # nothing on conflict): this job holds it now, or another does.
            holder = conn.execute(sql.lock_holder(self.dialect, queue, key)).first()
            if holder is not None and holder.expired:
                # Its worker died: take it over. Only on this rare path does the transaction
                # write to a row others hold a shared lock on (MySQL may then pick a deadlock
                # victim, which `push_unique` tries again).
                taking = sql.take_expired_lock(self.dialect, queue, key, item.job_id, ttl_ms)
                conn.execute(taking)
                holder = conn.execute(sql.lock_holder(self.dialect, queue, key)).first()
            if holder is None or str(holder.job_id) == item.job_id:
                store_jobs(conn, [item])
                return item.job_id
            return str(holder.job_id)

    def unlock(self, queue: str, unique_key: str, job_id: str) -> None:
        self._each([sql.free_lock(queue, unique_key, job_id)])

    def reserve(
        self, queue: str, count: int, *, lease_s: float, default_tries: int, alone: bool = False
    ) -> Batch:
        """See `Driver.reserve`. Whether recovered jobs wait is learnt when leases are recovered
        (at most every `RECOVER_EVERY_S`) and when one is looked for: never a query per reserve."""
        if self.recovery_due(queue):
            self.recover(queue, default_tries=default_tries)
        if alone and count > 0 and self.recovered_waiting(queue):
            batch = self._reserve_recovered(queue, lease_s)
            if batch.jobs:
                return batch
        while True:
            batch, failed_some = self._reserve_once(queue, count, lease_s)
            # Rows failed at reserve (oversized, unreadable) hid the jobs behind them: look
            # again, or a worker with --stop-when-empty would stop with those jobs still queued.
            if batch.jobs or not failed_some:
                return dataclasses.replace(batch, recovered_waiting=self.recovered_waiting(queue))

    def recovery_due(self, queue: str) -> bool:
        """Whether ``queue``'s expired leases are due to be looked for (`RECOVER_EVERY_S`)."""
        return time.monotonic() - self._recovered_at.get(queue, 0.0) >= RECOVER_EVERY_S

    def recovered_waiting(self, queue: str) -> bool:
        """Whether jobs recovered from a dead worker wait on ``queue``, as last learnt."""
        return self._recovered_waiting.get(queue, False)

    def _reserve_recovered(self, queue: str, lease_s: float) -> Batch:
        """One job recovered from a dead worker, to run alone; none if none can be taken."""
        with self._recovery:
            while True:
                batch, failed_some = self._reserve_once(queue, 1, lease_s, state=RECOVERED)
                if batch.jobs:
                    (job,) = batch.jobs
                    job = dataclasses.replace(job, recovered=True)
                    return Batch([job], recovered_waiting=True)
                if not failed_some:
                    self._recovered_waiting[queue] = False  # until a recovery finds some
                    return batch

    def _reserve_once(
        self, queue: str, count: int, lease_s: float, *, state: int = READY
    ) -> tuple[Batch, bool]:
        """One reserve transaction from the rows in ``state``; also ``True`` if it failed rows
        no worker can take."""
        token = secrets.token_hex(16)
        with self.mapped_errors(), self.engine.begin() as conn:
            rows = conn.execute(sql.select_ready(self.dialect, queue, count, state)).all()
            if not rows:
                due_ms = conn.execute(sql.next_due(self.dialect, queue)).scalar()
                return Batch([], None if due_ms is None else max(float(due_ms), 0.0) / 1000), False
            # Sizes first: an oversized payload is failed here and never read into a worker.
            oversized = [row.id for row in rows if row.size > self.max_payload_bytes]
            if oversized:
                conn.execute(sql.fail_oversized(self.dialect, oversized, self.max_payload_bytes))
            sized = [row for row in rows if row.size <= self.max_payload_bytes]
            taken = self._readable(conn, sized)
            if taken:
                ids = [row_id for row_id, _, _, _ in taken]
                conn.execute(sql.lease(self.dialect, ids, token, int(lease_s * 1000)))
        jobs = [Reserved(queue, uuid, raw, attempts + 1, token) for _, uuid, raw, attempts in taken]
        return Batch(jobs), len(taken) < len(rows)

    def _readable(
        self, conn: sa.Connection, rows: Sequence[sa.Row[Any]]
    ) -> list[tuple[int, str, bytes, int]]:
        """``(row id, job id, payload, attempts)`` of the rows a worker can take; the others,
        written into the table by something other than runequeue, are failed with the reason.

        A payload that is text but not a job (not UTF-8, not JSON) is the worker's to fail, as
        on Redis; one that is not text at all (a BLOB, a number: SQLite stores anything) has no
        bytes of a payload to hand over.
        """
        if not rows:
            return []
        stored = {
            row.id: row for row in conn.execute(sql.payloads(self.dialect, [r.id for r in rows]))
        }
        taken = []
        for row in rows:
            uuid = _text_or_none(row.uuid) if row.uuid_kind == "text" else None
            # A job id that is not text is replaced, so the failure can be recorded and purged.
            job_id = uuid if uuid is not None else f"unreadable-id-row-{row.id}"
            payload = stored[row.id]
            problem = _unreadable(row, job_id, payload.kind)
            if problem:
                new_id = None if job_id == uuid else job_id
                conn.execute(sql.quarantine(self.dialect, row.id, problem, uuid=new_id))
                log.warning("job %s (row %s) failed at reserve: %s", job_id, row.id, problem)
            else:
                taken.append((row.id, job_id, bytes(payload.payload), row.attempts))
        return taken

    def recover(self, queue: str, *, default_tries: int) -> bool:
        """Fail or put back expired leases of ``queue``; ``True`` if a job was put back."""
        self._recovered_at[queue] = time.monotonic()
        with self._recovery, self.mapped_errors(), self.engine.begin() as conn:
            dead_lettered, put_back = sql.expire_leases(self.dialect, queue, default_tries)
            conn.execute(dead_lettered)
            recovered = conn.execute(put_back).rowcount > 0
            if recovered:
                _notify(conn)
            # Set before the commit, which delivers the NOTIFY: a worker it wakes must already
            # know that recovered jobs wait, or it looks at ready jobs only and sleeps --sleep.
            waiting = conn.execute(sql.recovered_waiting(queue)).first() is not None
            self._recovered_waiting[queue] = waiting
        return recovered

    def _each(self, statements: Sequence[sa.Executable], *, runnable: bool = False) -> list[bool]:
        """Run each statement in one transaction; ``True`` where it changed its one row.

        ``runnable``: the statements make jobs runnable, so a change wakes idle workers.
        """
        with self.mapped_errors(), self.engine.begin() as conn:
            changed = [conn.execute(statement).rowcount == 1 for statement in statements]
            if runnable and any(changed):
                _notify(conn)
            return changed

    def ack(self, items: Sequence[Reserved]) -> list[bool]:
        """Delete the finished jobs whose leases still hold them: two statements for the lot
        (PostgreSQL's workers use one, `postgres_hot.ACK`). On MySQL a DELETE per job, by its
        unique job id: a locking read of many ids may be planned as a scan (a fresh table's
        statistics say it is small), and InnoDB would lock every row it examined, ready jobs
        included, which reserves (``SKIP LOCKED``) would then pass over."""
        if self.dialect in ("mysql", "mariadb"):
            return self._each([sql.ack(item.job_id, item.token) for item in items])
        leases = {item.job_id: item.token for item in items}
        with self.mapped_errors(), self.engine.begin() as conn:
            rows = conn.execute(sql.leases_of(list(leases))).all()
            held = {
                row.uuid: row.id
                for row in rows
                if row.state == LEASED and leases.get(row.uuid) == row.lease_token
            }
            if held:
                conn.execute(sql.delete_rows(list(held.values())))
        return [item.job_id in held for item in items]

    def extend(self, items: Sequence[Reserved], lease_s: float) -> list[bool]:
        lease_ms = int(lease_s * 1000)
        return self._each(
            [sql.extend(self.dialect, item.job_id, item.token, lease_ms) for item in items]
        )

    def release(self, item: Reserved, *, delay_s: float, refund: bool) -> bool:
        delay_ms = int(delay_s * 1000)
        statement = sql.release(self.dialect, item.job_id, item.token, delay_ms, refund)
        # Delayed too: idle workers wake, reserve nothing, and learn when it is due.
        return self._each([statement], runnable=True)[0]

    def bury(
        self,
        item: Reserved,
        error: str,
        then: Sequence[Outgoing] = (),
        batch: str | None = None,
    ) -> bool:
        settle = sql.bury(self.dialect, item.job_id, item.token, error)
        return self._settle_then(settle, item, then, batch, succeeded=False)

    def ack_then(self, item: Reserved, then: Sequence[Outgoing], batch: str | None = None) -> bool:
        settle = sql.ack(item.job_id, item.token)
        return self._settle_then(settle, item, then, batch, succeeded=True)

    def _settle_then(
        self,
        settle: sa.Executable,
        item: Reserved,
        then: Sequence[Outgoing],
        batch: str | None,
        *,
        succeeded: bool,
    ) -> bool:
        """Run ``settle`` (one held job's ack or bury) and, if it held, store ``then`` and move
        ``batch``: one transaction."""
        with self.mapped_errors(), self.engine.begin() as conn:
            if conn.execute(settle).rowcount != 1:
                return False  # the lease was lost: nothing changes
            if batch is not None:
                then = [*then, *move_batch(conn, batch, item.job_id, succeeded=succeeded)]
            if then:
                store_jobs(conn, then)
            return True

    def batches(self) -> BatchStore:
        return DatabaseBatches(self.engine, self.mapped_errors, store_jobs)

    def buried(self, queue: str, limit: int) -> list[Buried]:
        with self.mapped_errors(), self.engine.connect() as conn:
            rows = conn.execute(sql.buried(self.dialect, queue, limit)).all()
        return [
            Buried(queue, _as_text(row.uuid), bytes(row.payload or b""), _as_text(row.error))
            for row in rows
        ]

    def purge(self, queue: str, job_id: str) -> None:
        self._each([sql.purge(job_id)])

    def claim_failed_hook(self, queue: str, job_id: str) -> bool:
        return self._each([sql.claim_failed_hook(queue, job_id)])[0]

    def size(self, queue: str) -> int:
        with self.mapped_errors(), self.engine.connect() as conn:
            return int(conn.execute(sql.size(queue)).scalar() or 0)

    def counts(self, queue: str) -> QueueCounts:
        with self.mapped_errors(), self.engine.connect() as conn:
            ready, delayed, reserved = conn.execute(
                sql.counts(self.engine.dialect.name, queue)
            ).one()
        return QueueCounts(ready=int(ready), delayed=int(delayed), reserved=int(reserved))

    def clear(self, queue: str) -> int:
        with self.mapped_errors(), self.engine.begin() as conn:
            return int(conn.execute(sql.clear(queue)).rowcount)

    def _insert_line(self) -> InsertLine | None:
        """PostgreSQL through psycopg 3: dispatches run on a connection held for them
        (`runequeue.drivers.postgres_line`), made at the first dispatch."""
        if self._line is None and self._line_wanted:
            self._line = InsertLine(self.engine, sql.insert_jobs_from_json())
        return self._line

    def close(self) -> None:
        if self._line is not None:
            self._line.close()
        self.engine.dispose()


def _text_or_none(stored: bytes | None) -> str | None:
    """Stored bytes as text, or ``None`` if they are not UTF-8 (or NULL)."""
    try:
        return None if stored is None else bytes(stored).decode()
    except UnicodeDecodeError:
        return None


def _as_text(stored: bytes | None) -> str:
    """Stored bytes as text, bytes that are not UTF-8 escaped (``\\xff``), NULL as empty."""
    return "" if stored is None else bytes(stored).decode(errors="backslashreplace")


def _unreadable(row: sa.Row[Any], uuid: str, payload_kind: str) -> str:
    """Why no worker can take ``row`` of the jobs table, or ``""``; its job id is now ``uuid``."""
    if uuid != _text_or_none(row.uuid):
        shown = _as_text(row.uuid)[:80]
        return f"the stored job id is not UTF-8 text ({row.uuid_kind} {shown!r}); now {uuid}"
    if payload_kind != "text":
        return f"the stored payload is {_a(payload_kind)}, not text"
    return ""


def _a(kind: str) -> str:
    return "NULL" if kind == "null" else f"{'an' if kind[0] in 'aeiou' else 'a'} {kind}"
