"""A connection a producer holds for its one hot call, beside its client's pool.

Redis's script line (`redis_direct.ScriptLine`) and PostgreSQL's INSERT line
(`postgres_line.InsertLine`) skip their client's per-call layers the same way, with the same
rules: one thread at a time (a second one takes the pool instead of queueing), a failure drops the
connection (its state is unknown) and sends callers to the pool for `PAUSE_AFTER_FAILURE_S`, and a
forked child never uses its parent's socket. Whatever cannot go through the held connection
raises `Fallback`; the caller repeats the call through the pool, which is safe because every
such call is idempotent by job id.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

# After a failure the pool alone is used for a while: during an outage its own retries and errors
# decide how long a dispatch takes to fail, without a connect attempt of ours added to each.
PAUSE_AFTER_FAILURE_S = 1.0

C = TypeVar("C")


class Fallback(Exception):
    """The held connection could not make the call; make it through the pool instead."""


class HeldConnection(Generic[C]):
    """One connection, opened on first use by ``connect``, closed by ``disconnect``.

    ``failures`` are the client's errors: on one of them the connection is dropped and the call
    raises `Fallback`.
    """

    def __init__(
        self,
        connect: Callable[[], C],
        disconnect: Callable[[C], None],
        failures: tuple[type[BaseException], ...],
    ) -> None:
        self._open = connect
        self._close = disconnect
        self._failures = failures
        self._lock = threading.Lock()
        self._connection: C | None = None
        self._pid = os.getpid()
        self._resume_at = 0.0

    @contextlib.contextmanager
    def held(self) -> Iterator[C]:
        """The connection, for this thread alone while the block runs."""
        if not self._lock.acquire(blocking=False):
            raise Fallback("the held connection is busy")
        try:
            if time.monotonic() < self._resume_at:
                raise Fallback("the held connection failed a moment ago")
            yield self._connected()
        except self._failures as exc:
            # Replies may still be unread on it, or a transaction open: never trusted again.
            self._drop()
            self._resume_at = time.monotonic() + PAUSE_AFTER_FAILURE_S
            raise Fallback(str(exc)) from exc
        except BaseException:  # interrupted mid-call (KeyboardInterrupt): same reason
            self._drop()
            raise
        finally:
            self._lock.release()

    def _connected(self) -> C:
        if self._pid != os.getpid():  # a forked child must never share its parent's socket
            self._connection, self._pid = None, os.getpid()
        if self._connection is None:
            self._connection = self._open()
        return self._connection

    def _drop(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            with contextlib.suppress(Exception):
                self._close(connection)

    def close(self) -> None:
        with self._lock:
            self._drop()
