"""Job middleware and a job's own release/fail on the sync driver, where the job runs inside
dispatch and the limits are this process's."""

from __future__ import annotations

from pathlib import Path

import pytest

from runequeue import Queue, QueueConfig
from runequeue.errors import ManuallyFailed
from tests.support.jobs import (
    FailsItself,
    MaybeSkipped,
    RateLimitedCall,
    ReleasesItself,
    read_ledger,
)


def test_middleware_runs_inside_a_sync_dispatch(
    sqlite_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    sync = QueueConfig(driver="sync", database_url=sqlite_url)
    ledger = tmp_path / "ledger"
    Queue.dispatch(sync, MaybeSkipped(str(ledger), skip=True))
    assert read_ledger(ledger) == []
    for _ in range(3):
        Queue.dispatch(sync, RateLimitedCall(str(ledger), f"sync-{tmp_path.name}"))
    assert len(read_ledger(ledger)) == 2  # the third was over the limit: released, logged
    assert "sync driver has no queue to put it back on" in caplog.text

    with pytest.raises(ManuallyFailed, match="the input is bad"):
        Queue.dispatch(sync, FailsItself(str(ledger)))


def test_a_sync_job_that_releases_itself_runs_once(sqlite_url: str, tmp_path: Path) -> None:
    sync = QueueConfig(driver="sync", database_url=sqlite_url)
    ledger = tmp_path / "ledger"
    Queue.dispatch(sync, ReleasesItself(str(ledger), times=3))
    assert len(read_ledger(ledger)) == 1


def test_a_sync_job_with_a_retry_deadline_fails_as_any_sync_job(
    sqlite_url: str, tmp_path: Path
) -> None:
    from tests.support.jobs import Boom, RetriedUntil

    sync = QueueConfig(driver="sync", database_url=sqlite_url)
    # One try on the sync driver, whatever its deadline says: the error reaches the caller (it
    # was once taken for a release, logged and swallowed).
    with pytest.raises(Boom):
        Queue.dispatch(sync, RetriedUntil(str(tmp_path / "ledger"), seconds=60))
