"""Chains and batches under a SIGKILL loop (R40, ours: the seed has no workflows): every chain
still runs its steps in order to the end, and the batch reaches 100 % with ``then`` and
``finally_`` stored and run once each: the hand-offs and the counters move in the same atomic step
as each acknowledgement."""

from __future__ import annotations

import dataclasses
import random
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from runequeue import Bus, Queue, QueueConfig
from tests.chaos.conftest import Fleet
from tests.chaos.report import Result
from tests.support.jobs import BatchCallback, SturdyBatchMember, SturdyChainLink, read_events
from tests.workers import failed_jobs

LEASE_S = 2.0
STEPS = 4


@pytest.mark.parametrize("kind", ["redis", "database-sqlite", "database-postgresql"])
def test_r40_sigkill_loop_mid_chain_and_mid_batch(
    kind: str,
    backend_for: Callable[[str], QueueConfig],
    fleet_factory: list[Fleet],
    results: list[Result],
    scale: int,
    tmp_path: Path,
) -> None:
    config = dataclasses.replace(backend_for(kind), retry_after_s=LEASE_S)
    ledger = str(tmp_path / "ledger")
    chains = 10 * scale
    for n in range(chains):
        steps = [SturdyChainLink(ledger, f"c{n}.{k}", seconds=0.5) for k in range(STEPS)]
        Bus.chain(steps).dispatch(config)
    members = 60 * scale
    batch = (
        Bus.batch([SturdyBatchMember(ledger, f"b{n}", seconds=0.2) for n in range(members)])
        .then(BatchCallback(ledger, "then"))
        .catch(BatchCallback(ledger, "catch"))
        .finally_(BatchCallback(ledger, "finally"))
        .dispatch(config)
    )
    fleet = Fleet(config, 3, ["--concurrency", "4", "--sleep", "0.2"], tmp_path)
    fleet_factory.append(fleet)
    rng = random.Random(7)

    def events() -> list[str]:
        return [e.event for e in read_events(Path(ledger))]

    def finished() -> bool:
        seen = set(events())
        chains_done = all(f"done:c{n}.{STEPS - 1}" in seen for n in range(chains))
        return chains_done and {f"then:{batch.id}", f"finally:{batch.id}"} <= seen

    deadline = time.monotonic() + 120 * scale
    while not finished() and time.monotonic() < deadline:
        time.sleep(1.0)
        if len(fleet.kills) < 5 * scale:
            fleet.kill_one(rng)
        fleet.restart_dead()
    time.sleep(0.5)  # a callback noted twice would show by now
    assert fleet.stop() == [0] * len(fleet.workers)

    seen = events()
    out_of_order = 0
    for n in range(chains):
        first_done = {
            k: seen.index(f"done:c{n}.{k}") for k in range(STEPS) if f"done:c{n}.{k}" in seen
        }
        starts = [
            seen.index(f"start:c{n}.{k}") for k in range(1, STEPS) if f"start:c{n}.{k}" in seen
        ]
        lost_steps = STEPS - len(first_done)
        out_of_order += lost_steps + sum(
            start < first_done[k] for k, start in enumerate(starts) if k in first_done
        )
    found = batch.fresh()
    callbacks = [seen.count(f"{name}:{batch.id}") for name in ("then", "catch", "finally")]
    started = [e for e in seen if e.startswith("start:")]
    results.append(
        Result("R40/workflows", kind, chains * STEPS + members, f"{len(fleet.kills)} SIGKILLs",
               out_of_order + found.pending_jobs, len(started) - len(set(started)), None,
               f"{chains} chains x {STEPS}, a batch of {members}; callbacks {callbacks}")
    )  # fmt: skip
    assert len(fleet.kills) >= 2  # the kills landed while chains and the batch ran
    assert out_of_order == 0  # every chain ran to its end, each step after the one before
    assert (found.pending_jobs, found.failed_jobs, found.progress) == (0, 0, 100)
    assert callbacks == [1, 0, 1]
    assert failed_jobs(config) == []
    assert Queue.size(config) == 0
