"""The worker's batched log lines: none lost, warnings written at once, a quiet worker's last
lines still written, and the timestamp the same as logging's own."""

from __future__ import annotations

import io
import logging
import time
from collections.abc import Callable

from runequeue.logs import LINE_FORMAT, BatchingStreamHandler, SecondCachedFormatter


def make_logger(stream: io.StringIO, name: str) -> tuple[logging.Logger, BatchingStreamHandler]:
    handler = BatchingStreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    logger = logging.getLogger(name)
    logger.propagate = False
    logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    return logger, handler


def wait_for(predicate: Callable[[], bool], within_s: float = 5.0) -> bool:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return False


def test_every_line_is_written_in_order() -> None:
    stream = io.StringIO()
    logger, handler = make_logger(stream, "tests.logs.order")
    for n in range(5_000):
        logger.info("job %d", n)
    handler.flush()
    assert stream.getvalue().splitlines() == [f"INFO job {n}" for n in range(5_000)]
    logger.removeHandler(handler)


def test_a_warning_is_written_at_once_with_the_lines_before_it() -> None:
    stream = io.StringIO()
    logger, handler = make_logger(stream, "tests.logs.warning")
    logger.info("done")
    logger.warning("lease lost")
    # No flush and no waiting: the warning itself wrote both lines.
    assert stream.getvalue().splitlines() == ["INFO done", "WARNING lease lost"]
    logger.removeHandler(handler)


def test_a_quiet_workers_last_line_is_written_without_a_flush() -> None:
    stream = io.StringIO()
    logger, handler = make_logger(stream, "tests.logs.quiet")
    logger.info("the last job")
    assert wait_for(lambda: stream.getvalue() == "INFO the last job\n")
    logger.removeHandler(handler)


def test_cached_timestamps_match_loggings_own() -> None:
    ours, theirs = SecondCachedFormatter(LINE_FORMAT), logging.Formatter(LINE_FORMAT)
    for created in (1_795_000_000.0, 1_795_000_000.999, 1_795_000_001.25, 1_795_000_000.5):
        record = logging.LogRecord("x", logging.INFO, __file__, 1, "m", None, None)
        record.created, record.msecs = created, (created - int(created)) * 1000
        assert ours.format(record) == theirs.format(record)
