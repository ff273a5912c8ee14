"""The worker's batched log lines: none lost, warnings written at once, a quiet worker's last
lines still written, and the timestamp the same as logging's own."""

from __future__ import annotations

import io
import logging
import time
from collections.abc import Callable

from runequeue.logs import LINE_FORMAT, BatchingStreamHandler, Recurring, SecondCachedFormatter


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


def test_a_recurring_problem_is_logged_first_then_once_per_interval() -> None:
    recurring = Recurring(every_s=3600)
    assert recurring.due() == 0  # the first time: at once
    assert [recurring.due() for _ in range(3)] == [None, None, None]  # then left out...
    recurring.clear()
    assert recurring.due() == 0  # ...until it went away and came back
    often = Recurring(every_s=0.0)
    assert often.due() == 0 and often.due() == 0
    assert Recurring.note(0) == ""
    assert Recurring.note(3) == " (3 more like it since the last line)"


def test_the_line_after_an_interval_counts_the_repeats_left_out() -> None:
    recurring = Recurring(every_s=0.05)
    recurring.due()
    recurring.due()
    recurring.due()
    time.sleep(0.06)
    assert recurring.due() == 2
