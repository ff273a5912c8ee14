"""How an idle SQLite worker learns that another process committed: ``PRAGMA data_version``.

SQLite has no NOTIFY. Polling the jobs table would read it; this pragma reads a counter that
changes whenever another connection commits to the file (a dispatch, a release, another worker's
acknowledgement), from the WAL index in shared memory, in a few microseconds. So an idle worker
looks every `WATCH_EVERY_S` and runs a reserve only when something was committed: a job
dispatched from another process starts within a couple of milliseconds, not the tens of
milliseconds to seconds of a backing-off poll.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time

WATCH_EVERY_S = 0.002


class CommitWatch:
    """Waits until the SQLite file at ``path`` sees a commit from another connection."""

    def __init__(self, path: str) -> None:
        self._path = path
        self._connection: sqlite3.Connection | None = None

    def _version(self) -> int:
        if self._connection is None:
            # Read-only, and never creating the file: the watch must not make a database.
            uri = f"file:{self._path}?mode=ro"
            self._connection = sqlite3.connect(uri, uri=True, check_same_thread=False)
        row = self._connection.execute("PRAGMA data_version").fetchone()
        return int(row[0])

    async def wait(self, timeout_s: float, look_again: asyncio.Event) -> None:
        """Until another connection commits, ``look_again`` is set, or ``timeout_s`` passes.

        An error reading the counter (the file replaced, locked for long) ends the wait: the
        caller's reserve then looks, and says what is wrong if anything is.
        """
        deadline = time.monotonic() + timeout_s
        try:
            seen = self._version()
            while time.monotonic() < deadline and not look_again.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(look_again.wait(), WATCH_EVERY_S)
                if self._version() != seen:
                    return
        except sqlite3.Error:
            self.close()

    def close(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            connection.close()
