"""The worker's first-hour fixes (issue 10): what a newcomer's mistakes do to a worker.

- item 2: a worker with no job classes refuses to start; a job name the worker does not know yet
  (a deploy-order mistake) is put back with its attempt given back, and fails only once it is
  10 minutes old;
- item 3: ``sys.exit()`` or ``KeyboardInterrupt`` in ``handle`` or ``failed`` fails that attempt
  with its real cause, and the worker goes on;
- item 10: RETRY and FAIL lines say why (``ExcType: message``), the traceback at DEBUG;
- item 18: a handler that blocks the event loop past its timeout is warned about;
- item 16: ``--strict`` refuses a backend it cannot reach.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from pathlib import Path

import msgspec
import pytest

from runequeue import ConfigError, Queue, QueueConfig, job
from runequeue.drivers import open_driver
from runequeue.drivers.base import Outgoing
from runequeue.payload import Envelope, new_job_id
from runequeue.retry import UNKNOWN_JOB_DELAY_S, Defer, defer_unknown
from runequeue.worker import WorkerOptions, run_worker
from tests.support.jobs import (
    AlwaysFails,
    ExitsInHandle,
    FlakyThenOk,
    HookExits,
    InterruptsInThread,
    Record,
    SpinsPastTimeout,
    read_ledger,
)
from tests.workers import failed_jobs, options, push_raw, spawn_worker, work

UNKNOWN_NAME = "billing.NotDeployedYet"


def events(ledger: Path) -> list[str]:
    return [row[0] for row in read_ledger(ledger)]


def unknown_job(config: QueueConfig, *, age_s: float) -> str:
    """Push a well-formed job whose class no worker has, dispatched ``age_s`` seconds ago."""
    envelope = Envelope(
        id=new_job_id(),
        job=UNKNOWN_NAME,
        data=msgspec.Raw(b"{}"),
        queue=config.queue_name,
        created_at=time.time() - age_s,
    )
    push_raw(config, [Outgoing(envelope.id, config.queue_name, config.codec.encode(envelope))])
    return envelope.id


# item 2 (a): no job classes at all


def test_a_worker_without_job_classes_refuses_to_start(
    config: QueueConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    Queue.dispatch(config, Record(ledger="unused"))
    monkeypatch.setattr(job, "_registry", {})  # as in a worker started without --import
    with pytest.raises(ConfigError, match="no job classes are registered") as raised:
        asyncio.run(run_worker(config, options(config)))
    assert "--import myapp.jobs" in str(raised.value)
    assert "RUNE_IMPORTS" in str(raised.value)
    assert failed_jobs(config) == []
    assert Queue.size(config) == 1


# item 2 (b): a job name this worker does not know yet


def test_an_unknown_job_name_is_put_back_with_its_attempt_refunded(
    config: QueueConfig, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr("runequeue.retry.UNKNOWN_JOB_DELAY_S", 0.0)  # come back at once
    job_id = unknown_job(config, age_s=0)

    with caplog.at_level(logging.WARNING, logger="runequeue"):
        work(config, max_jobs=3, tries=1)  # taken three times, so two refunds are seen

    assert failed_jobs(config) == []
    assert Queue.size(config) == 1
    warning = next(r for r in caplog.records if UNKNOWN_NAME in r.getMessage())
    assert warning.levelno == logging.WARNING
    assert job_id in warning.getMessage()
    assert "--import" in warning.getMessage()
    assert attempts_on_next_reserve(config) == 1  # every attempt was given back


def attempts_on_next_reserve(config: QueueConfig) -> int:
    """The attempt number the next reserve of the queue's one job counts."""

    async def reserve() -> int:
        driver = open_driver(config)
        try:
            batch = await driver.reserve(config.queue_name, 1, lease_s=30, default_tries=1)
            return batch.jobs[0].attempts
        finally:
            await driver.close()

    return asyncio.run(reserve())


def test_an_unknown_job_name_is_put_back_after_a_delay_on_the_database_driver(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("runequeue.retry.UNKNOWN_JOB_DELAY_S", 0.0)  # come back at once
    config = QueueConfig(driver="database", database_url=sqlite_url)
    unknown_job(config, age_s=0)
    work(config, max_jobs=3, tries=1)  # taken three times, so two refunds are seen
    assert failed_jobs(config) == []
    assert Queue.size(config) == 1
    assert attempts_on_next_reserve(config) == 1  # every attempt was given back


def test_an_unknown_job_name_fails_once_it_is_ten_minutes_old(config: QueueConfig) -> None:
    job_id = unknown_job(config, age_s=601)
    work(config)
    (failure,) = failed_jobs(config)
    assert failure.job_id == job_id
    assert failure.exception.startswith("runequeue.errors.UnknownJob: ")
    assert UNKNOWN_NAME in failure.exception
    assert Queue.size(config) == 0


def test_the_grace_for_unknown_jobs_is_bounded() -> None:
    now = 1_000_000.0
    assert defer_unknown(now - 599, now) == Defer(UNKNOWN_JOB_DELAY_S)
    assert defer_unknown(now - 30, now) is not None
    assert defer_unknown(now + 30, now) is not None  # another machine's clock a little ahead
    assert defer_unknown(now - 600, now) is None  # old enough: fail it
    assert defer_unknown(now + 3600, now) is None  # an unbelievable dispatch time gets no grace


def test_a_malformed_payload_still_fails_at_once(config: QueueConfig) -> None:
    push_raw(config, [Outgoing("not-json", config.queue_name, b"{not json")])
    work(config)
    (failure,) = failed_jobs(config)
    assert failure.exception.startswith("runequeue.errors.InvalidPayload: ")


# item 3: BaseException inside handle() and failed()


def test_sys_exit_and_keyboard_interrupt_in_jobs_fail_the_job_not_the_worker(
    sqlite_url: str, tmp_path: Path
) -> None:
    config = QueueConfig(driver="database", database_url=sqlite_url)
    ledger = str(tmp_path / "ledger")
    exits = Queue.dispatch(config, ExitsInHandle(ledger=ledger))
    interrupts = Queue.dispatch(config, InterruptsInThread(ledger=ledger))
    hook_exits = Queue.dispatch(config, HookExits(ledger=ledger))
    Queue.dispatch(config, Record(ledger=ledger))
    log = tmp_path / "worker.log"

    worker = spawn_worker(config, "--stop-when-empty", "--concurrency", "1", log=log)
    try:
        code = worker.wait(timeout=60)
    finally:
        if worker.poll() is None:
            worker.kill()

    text = log.read_text()
    assert code == 0, text
    assert sorted(events(Path(ledger))) == ["done", "hook", "start", "start"]
    errors = {failure.job_id: failure.exception for failure in failed_jobs(config)}
    assert errors[exits].startswith("builtins.SystemExit: 3"), errors[exits]
    assert errors[interrupts].startswith("builtins.KeyboardInterrupt: interrupted in a thread")
    assert errors[hook_exits].startswith("tests.support.jobs.Boom: fails before its hook exits")
    assert "LeaseExpired" not in text
    assert "failed() hook of tests.HookExits" in text


# item 10: why an attempt failed, on its RETRY and FAIL lines


def test_retry_and_fail_lines_say_why(
    config: QueueConfig, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    ledger = str(tmp_path / "ledger")
    Queue.dispatch(config, FlakyThenOk(ledger=ledger, fail_times=1))
    Queue.dispatch(config, AlwaysFails(ledger=ledger), tries=1)

    with caplog.at_level(logging.DEBUG, logger="runequeue"):
        work(config)

    lines = [record.getMessage() for record in caplog.records]
    (retry,) = [line for line in lines if line.startswith("RETRY")]
    assert retry.endswith("RuntimeError: flaky failure on attempt 1")
    (fail,) = [line for line in lines if line.startswith("FAIL")]
    assert fail.endswith("tests.support.jobs.Boom: always fails")
    (done,) = [line for line in lines if line.startswith("DONE")]
    assert done.endswith(" ms")  # unchanged: nothing after the duration
    tracebacks = [r for r in caplog.records if r.levelno == logging.DEBUG and r.exc_info]
    assert len(tracebacks) == 2


def test_the_error_on_a_log_line_is_one_line_and_bounded() -> None:
    from runequeue.runner import error_summary

    summary = error_summary(ValueError("first line\nsecond line " + "x" * 500))
    assert "\n" not in summary
    assert summary.startswith("ValueError: first line second line xxx")
    assert len(summary) == 200  # ERROR_SUMMARY_CHARS, the ellipsis included


# item 18: a handler that blocks the event loop past its timeout


def test_a_handler_blocking_the_event_loop_past_its_timeout_is_warned_about(
    config: QueueConfig, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    ledger = str(tmp_path / "ledger")
    job_id = Queue.dispatch(config, SpinsPastTimeout(ledger=ledger, seconds=0.6))

    with caplog.at_level(logging.WARNING, logger="runequeue"):
        work(config)

    assert events(Path(ledger)) == ["start", "done"]  # it could not be stopped
    (warning,) = [r for r in caplog.records if "blocked the event loop" in r.getMessage()]
    assert job_id in warning.getMessage()
    assert "def handle" in warning.getMessage()
    assert "process pool" in warning.getMessage()


# item 16: --strict and an unreachable backend


def test_strict_refuses_a_redis_it_cannot_reach(config: QueueConfig) -> None:
    unreachable = dataclasses.replace(config, redis_url="redis://127.0.0.1:1/0")
    strict = WorkerOptions(queues=("default",), strict=True, max_time_s=1.0)
    with pytest.raises(ConfigError, match="--strict") as raised:
        asyncio.run(run_worker(unreachable, strict))
    assert "127.0.0.1:1" in str(raised.value)


def test_a_stop_asked_for_during_a_reserve_is_not_held_up_by_the_idle_wait(
    config: QueueConfig,
) -> None:
    """A stop that lands while a reserve is in flight finds no wait to cancel yet: the worker
    must not then block its whole ``sleep_s`` (a BLPOP on Redis) before noticing."""

    async def scenario() -> float:
        from runequeue.failed_store import FailedJobStore
        from runequeue.worker import Worker

        driver = open_driver(config)
        store = FailedJobStore(config.database_url)
        worker = Worker(driver, store, options(config, stop_when_empty=False, sleep_s=10.0),
                        connection="redis")  # fmt: skip
        try:
            worker.request_stop()  # as if a signal arrived during the reserve
            started = time.monotonic()
            await worker._idle(None, 1)
            return time.monotonic() - started
        finally:
            await driver.close()
            store.close()

    assert asyncio.run(scenario()) < 5  # not the 10 s sleep
