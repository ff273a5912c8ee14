"""`rune queue:batches`, `queue:retry-batch` and `queue:prune-batches`, on Redis."""

from __future__ import annotations

from pathlib import Path

import msgspec

from runequeue import Bus, QueueConfig
from tests.integration.test_failed_jobs import run_cli
from tests.support.jobs import BatchMember
from tests.workers import work


def test_list_retry_and_prune_batches(config: QueueConfig, tmp_path: Path) -> None:
    ledger = str(tmp_path / "ledger")
    assert "no batches" in run_cli(["queue:batches"], config)
    batch = (
        Bus.batch([BatchMember(ledger, "a", fails=True), BatchMember(ledger, "b")])
        .name("nightly import")
        .allow_failures()
        .dispatch(config)
    )
    work(config)

    table = run_cli(["queue:batches"], config)
    assert batch.id in table and "nightly import" in table and "50%" in table
    (row,) = [msgspec.json.decode(line) for line in
              run_cli(["queue:batches", "--json"], config).splitlines()]  # fmt: skip
    assert (row["id"], row["total_jobs"], row["failed_jobs"], row["progress"]) == (
        batch.id, 2, 1, 50,
    )  # fmt: skip
    assert row["finished_at"] is not None and row["cancelled_at"] is None

    out = run_cli(["queue:retry-batch", batch.id], config)
    assert "retried" in out and batch.failed_job_ids == [] and batch.fresh().failed_job_ids
    assert "no batch with id nope" in run_cli(["queue:retry-batch", "nope"], config, exit_code=1)
    work(config)  # it fails again: counted once, kept in failed_jobs
    assert batch.fresh().failed_jobs == 1

    assert "deleted 0 batch(es)" in run_cli(["queue:prune-batches"], config)
    assert "deleted 1 batch(es)" in run_cli(["queue:prune-batches", "--hours", "0"], config)
    assert Bus.find_batch(config, batch.id) is None


def test_batch_commands_on_the_sync_driver_say_what_to_set(config: QueueConfig) -> None:
    from dataclasses import replace

    out = run_cli(["queue:batches"], replace(config, driver="sync"), exit_code=1)
    assert "keeps no queue: set QUEUE_DRIVER=database (or redis)" in out
