"""R24: every exception between reserve and settle ends the attempt (issue 11, item 3).

A job whose constructor raises (a ``__post_init__`` lookup that fails, or one that calls
``sys.exit``), or whose exception cannot even be turned into text, used to leave a task that died
with its lease still renewed: never retried, never failed, never finished (a zombie). Each must end
in ``failed_jobs`` with its reason, while the valid jobs beside it run and the worker stops by
itself.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import msgspec
import pytest

from runequeue import Queue, QueueConfig
from runequeue.drivers.base import Outgoing
from tests.chaos.report import Result
from tests.support.jobs import FailsUnprintably, Record, read_events
from tests.workers import failed_jobs, push_raw, work

DRIVERS = ["redis", "database-sqlite", "database-postgresql", "database-mysql"]


def _envelope(job_id: str, name: str, data: dict[str, str]) -> bytes:
    return msgspec.json.encode(
        {"id": job_id, "job": name, "data": data, "queue": "default", "created_at": time.time()}
    )


@pytest.mark.parametrize("kind", DRIVERS)
def test_r24_no_exception_leaves_a_zombie_job(
    kind: str, backend_for: Callable[[str], QueueConfig], results: list[Result], tmp_path: Path
) -> None:
    config = backend_for(kind)
    ledger = str(tmp_path / "ledger")
    valid = Queue.dispatch_many(config, [Record(ledger=ledger) for _ in range(5)])
    unprintable = Queue.dispatch(config, FailsUnprintably(ledger=ledger))
    push_raw(config, [
        Outgoing("lookup-fails", "default", _envelope(
            "lookup-fails", "tests.LooksUpOnBuild", {"ledger": ledger, "key": "missing"})),
        Outgoing("exits-on-build", "default", _envelope(
            "exits-on-build", "tests.LooksUpOnBuild", {"ledger": ledger, "key": "exit"})),
    ])  # fmt: skip

    started = time.monotonic()
    worker = work(config, concurrency=4)  # stops when empty: a zombie would keep it running
    elapsed = time.monotonic() - started

    failures = {f.job_id: f for f in failed_jobs(config)}
    done = {e.job_id for e in read_events(Path(ledger)) if e.event in ("done", "start")}
    results.append(
        Result("R24", kind, 8, "a __post_init__ raising LookupError and SystemExit; an exception "
               "whose __str__ raises", 0, 0, None,
               f"{len(failures)} of 3 failed with their cause; 5 of 5 valid ran; worker stopped "
               f"by itself after {elapsed:.1f} s")
    )  # fmt: skip
    assert set(valid) <= done
    assert set(failures) == {"lookup-fails", "exits-on-build", unprintable}
    assert "LookupFailed: no row 'missing'" in failures["lookup-fails"].exception
    assert "SystemExit" in failures["exits-on-build"].exception
    assert "Unprintable" in failures[unprintable].exception
    assert worker.processed == 8
