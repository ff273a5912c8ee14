"""The worker's log output: one line per job, at the cost of a few microseconds, not a syscall.

A busy worker logs tens of thousands of lines a second. A plain `logging.StreamHandler` writes and
flushes each one (a system call per job), and every record looks up its thread, process and
caller. Profiled on a no-op job, that was a fifth of the worker's time. Here lines are gathered
and written together at most `FLUSH_INTERVAL_S` later, warnings and errors at once, and records
skip the lookups the format never prints. A worker killed with SIGKILL can lose the last
`FLUSH_INTERVAL_S` of INFO lines; the jobs themselves are unaffected.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from typing import TextIO

FLUSH_INTERVAL_S = 0.05
LINE_FORMAT = "%(asctime)s %(message)s"


class SecondCachedFormatter(logging.Formatter):
    """``asctime`` formatted once per second (``strftime`` per record was a tenth of logging)."""

    def __init__(self, fmt: str) -> None:
        super().__init__(fmt)
        self._second = -1
        self._prefix = ""

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        second = int(record.created)
        if second != self._second:
            self._second = second
            self._prefix = time.strftime("%Y-%m-%d %H:%M:%S", self.converter(second))
        return f"{self._prefix},{int(record.msecs):03d}"


class BatchingStreamHandler(logging.StreamHandler[TextIO]):
    """Writes lines in batches: when a warning arrives, or `FLUSH_INTERVAL_S` after the first
    unwritten line (a daemon thread makes sure a quiet worker's last lines still appear)."""

    def __init__(self, stream: TextIO) -> None:
        super().__init__(stream)
        self._pending: list[str] = []
        self._wake = threading.Condition(threading.Lock())
        threading.Thread(target=self._flush_forever, name="log-flush", daemon=True).start()

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record)
        except Exception:
            self.handleError(record)
            return
        with self._wake:
            self._pending.append(line)
            if len(self._pending) == 1:
                self._wake.notify()
        if record.levelno >= logging.WARNING:
            self.flush()

    def flush(self) -> None:
        with self._wake:
            lines, self._pending = self._pending, []
        if not lines:
            return
        self.acquire()  # one writer at a time, so batches never interleave
        try:
            self.stream.write("\n".join(lines) + "\n")
            self.stream.flush()
        finally:
            self.release()

    def _flush_forever(self) -> None:
        while True:
            with self._wake:
                while not self._pending:
                    self._wake.wait()
            time.sleep(FLUSH_INTERVAL_S)
            try:
                self.flush()
            except Exception:  # a closed or broken stream: nothing useful to do in a daemon
                return


def setup_worker_logging(stream: TextIO | None = None) -> None:
    """INFO lines with a timestamp to ``stream`` (stdout), batched; replaces existing handlers."""
    # Documented logging optimisations: the format prints none of these, so skip their lookups.
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    logging._srcfile = None  # no caller lookup per record (the logging HOWTO, "Optimization")
    handler = BatchingStreamHandler(stream or sys.stdout)
    handler.setFormatter(SecondCachedFormatter(LINE_FORMAT))
    logging.basicConfig(level=logging.INFO, handlers=[handler], force=True)


def flush_logs() -> None:
    """Write out the lines still gathered, before printing anything else to the same terminal."""
    for handler in logging.getLogger().handlers:
        handler.flush()
