"""Issue 10, item 15: the sync driver on a database without `rune migrate`. A failing job's own
exception reaches the caller (so `pytest.raises(RuntimeError)` works), and that its failure could
not be recorded is one warning line."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from pathlib import Path

import pytest

from runequeue import Job, Queue, QueueConfig


@dataclasses.dataclass
class RaisesRuntimeError(Job, name="tests.sync_unmigrated.RaisesRuntimeError"):
    async def handle(self) -> None:
        raise RuntimeError("card declined")


def test_the_jobs_own_error_reaches_the_caller_and_the_store_problem_is_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config = QueueConfig(driver="sync", database_url=f"sqlite:///{tmp_path / 'unmigrated.db'}")
    with (
        caplog.at_level(logging.WARNING, logger="runequeue"),
        pytest.raises(RuntimeError, match="card declined"),
    ):
        Queue.dispatch(config, RaisesRuntimeError())
    (warning,) = [r for r in caplog.records if r.levelno == logging.WARNING]
    message = warning.getMessage()
    assert "\n" not in message
    assert "tests.sync_unmigrated.RaisesRuntimeError" in message
    assert "failed with RuntimeError and could not be recorded in failed_jobs" in message
    assert "run `rune migrate`" in message


def test_the_same_from_dispatch_async(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    config = QueueConfig(driver="sync", database_url=f"sqlite:///{tmp_path / 'unmigrated.db'}")
    with (
        caplog.at_level(logging.WARNING, logger="runequeue"),
        pytest.raises(RuntimeError, match="card declined"),
    ):
        asyncio.run(Queue.dispatch_async(config, RaisesRuntimeError()))
    assert any("could not be recorded" in r.getMessage() for r in caplog.records)
