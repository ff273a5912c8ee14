"""The worker's log output: one line per job, at the cost of a few microseconds, not a syscall.

A busy worker logs tens of thousands of lines a second. A plain `logging.StreamHandler` writes and
flushes each one (a system call per job), and every record looks up its caller. Profiled on a
no-op job, that was a fifth of the worker's time. Here lines are gathered and written together at
most `FLUSH_INTERVAL_S` later, warnings and errors at once, and the per-job records skip the
caller lookup (`log_line`). A worker killed with SIGKILL can lose the last
`FLUSH_INTERVAL_S` of INFO lines; the jobs themselves are unaffected.
"""

from __future__ import annotations

import json
import logging
import logging.config
import sys
import threading
import time
from typing import TextIO

from runequeue.errors import ConfigError

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


RUNEQUEUE_LOGGER = "runequeue"


def setup_worker_logging(
    stream: TextIO | None = None, *, level: int = logging.INFO, config_file: str | None = None
) -> None:
    """Send runequeue's own log lines to ``stream`` (stdout), batched, at ``level``.

    Only the ``runequeue`` logger is configured: the root logger, and so the application's own
    logging, stays as the application set it up (a job module may configure it when imported).
    With ``config_file`` (a `logging.config` file: ``.json`` for dictConfig, else the INI format
    of fileConfig) that file configures everything, runequeue's logger included.
    """
    if config_file is not None:
        load_logging_config(config_file)
        if level < logging.INFO:  # `rune -v`: the file routes the lines, -v still asks for more
            logging.getLogger(RUNEQUEUE_LOGGER).setLevel(level)
        return
    logger = logging.getLogger(RUNEQUEUE_LOGGER)
    for old in [h for h in logger.handlers if isinstance(h, BatchingStreamHandler)]:
        logger.removeHandler(old)  # configured again (the demo, tests): one handler, not two
        old.flush()
    handler = BatchingStreamHandler(stream or sys.stdout)
    handler.setFormatter(SecondCachedFormatter(LINE_FORMAT))
    logger.addHandler(handler)
    logger.setLevel(level)
    # Records still propagate: an application that configured the root logger (a log file, say)
    # gets runequeue's lines there too; one that configured nothing gets them only here.


def load_logging_config(path: str) -> None:
    """Apply a standard `logging.config` file: JSON for dictConfig, INI for fileConfig."""
    try:
        if path.endswith(".json"):
            with open(path, encoding="utf-8") as config:
                logging.config.dictConfig(json.load(config))
        else:
            logging.config.fileConfig(path, disable_existing_loggers=False)
    except (OSError, ValueError, KeyError, TypeError, RuntimeError) as exc:
        raise ConfigError(f"cannot use logging config {path!r}: {exc}") from exc


def log_line(logger: logging.Logger, level: int, message: str, *args: object) -> None:
    """``logger.log`` without the caller lookup (a stack walk per record).

    The per-job lines are logged tens of thousands of times a second, and their format prints no
    file or line. The global ``logging._srcfile = None`` switch would save the same for every
    logger, but it would also blank ``%(lineno)d`` and ``%(funcName)s`` in the application's own
    records.
    """
    if logger.isEnabledFor(level):
        logger.handle(logger.makeRecord(logger.name, level, "", 0, message, args, None))


def flush_logs() -> None:
    """Write out the lines still gathered, before printing anything else to the same terminal."""
    for handler in logging.getLogger(RUNEQUEUE_LOGGER).handlers:
        handler.flush()


class Recurring:
    """Whether to log a problem that comes back at every try: the first time, then once per
    ``every_s`` with how many repeats were left out, so a day at the memory limit is a line a
    minute, not a line a second."""

    def __init__(self, every_s: float = 60.0) -> None:
        self.every_s = every_s
        self._logged_at: float | None = None
        self._left_out = 0

    def due(self) -> int | None:
        """The repeats left out since the last line when one is due now, else ``None``."""
        now = time.monotonic()
        if self._logged_at is not None and now - self._logged_at < self.every_s:
            self._left_out += 1
            return None
        left_out, self._left_out, self._logged_at = self._left_out, 0, now
        return left_out

    @staticmethod
    def note(left_out: int) -> str:
        """What to add to the line about the repeats left out (nothing the first time)."""
        return f" ({left_out} more like it since the last line)" if left_out else ""

    def clear(self) -> None:
        """The problem went away: the next time it comes back is logged at once."""
        self._logged_at, self._left_out = None, 0
