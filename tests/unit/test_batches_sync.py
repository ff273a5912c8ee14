"""Batches on the sync driver: each job runs as the batch is dispatched, and each callback as it
falls due; the batch is kept in this process, so `Bus.find_batch` reads it there."""

from __future__ import annotations

import asyncio
from pathlib import Path

from runequeue import Bus, QueueConfig
from tests.support.jobs import BatchCallback, BatchMember, GrowsBatch, SeesCancelled, read_ledger


def events(ledger: Path) -> list[str]:
    return [row[0] for row in read_ledger(ledger)]


def test_a_sync_batch_runs_its_jobs_then_its_callbacks_in_dispatch(
    sqlite_url: str, tmp_path: Path
) -> None:
    sync = QueueConfig(driver="sync", database_url=sqlite_url)
    ledger = str(tmp_path / "ledger")
    batch = (
        Bus.batch([BatchMember(ledger, "a"), GrowsBatch(ledger, 1)])
        .then(BatchCallback(ledger, "then"))
        .finally_(BatchCallback(ledger, "finally"))
        .dispatch(sync)
    )
    assert events(tmp_path / "ledger") == [
        "start:a", "done:a", "start:added0", "done:added0", "grew",
        f"then:{batch.id}", f"finally:{batch.id}",
    ]  # fmt: skip
    found = Bus.find_batch(sync, batch.id)
    assert found is not None
    assert (found.total_jobs, found.pending_jobs, found.progress) == (3, 0, 100)


def test_a_failure_in_a_sync_batch_is_the_batchs_not_the_callers(
    sqlite_url: str, tmp_path: Path
) -> None:
    sync = QueueConfig(driver="sync", database_url=sqlite_url)
    ledger = str(tmp_path / "ledger")
    batch = (
        Bus.batch([BatchMember(ledger, "a", fails=True), SeesCancelled(ledger)])
        .catch(BatchCallback(ledger, "catch"))
        .finally_(BatchCallback(ledger, "finally"))
        .dispatch(sync)  # does not raise: the failure is counted, recorded, and caught
    )
    assert events(tmp_path / "ledger") == [
        "start:a", f"catch:{batch.id}", "cancelled:True", f"finally:{batch.id}",
    ]  # fmt: skip
    found = batch.fresh()
    assert (found.failed_jobs, found.cancelled(), found.finished()) == (1, True, True)


def test_a_sync_batch_dispatched_from_async_code(sqlite_url: str, tmp_path: Path) -> None:
    sync = QueueConfig(driver="sync", database_url=sqlite_url)
    ledger = str(tmp_path / "ledger")
    batch = asyncio.run(Bus.batch([BatchMember(ledger, "a")]).dispatch_async(sync))
    assert events(tmp_path / "ledger") == ["start:a", "done:a"]
    assert asyncio.run(Bus.find_batch_async(sync, batch.id)) is not None
