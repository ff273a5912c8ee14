"""Workers that die, stall or block.

R1 (SIGKILL loop), R2 (SIGTERM drain), R13 (a job that kills its worker), R14 (a blocked event
loop keeps its lease) and R15 (a paused worker loses its lease).
"""

from __future__ import annotations

import dataclasses
import random
import signal
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

from runequeue import Queue, QueueConfig
from tests.chaos.conftest import Fleet
from tests.chaos.report import Result
from tests.support.jobs import BlockingSleepy, KillsItsWorker, Record, Sleepy, read_events
from tests.workers import failed_jobs, spawn_worker, wait_until

DRIVERS = ["redis", "database-sqlite", "database-postgresql"]
LEASE_S = 2.0


def _redelivery_times(ledger: Path, kills: list[tuple[int, float]]) -> list[float]:
    """For each job a killed worker had started and not finished: kill -> next start."""
    events = read_events(ledger)
    finished_by = {(e.job_id, e.pid) for e in events if e.event == "done"}
    latencies = []
    for pid, killed_at in kills:
        orphans = {
            e.job_id for e in events if e.pid == pid and e.event == "start" and e.at <= killed_at
        } - {job_id for job_id, p in finished_by if p == pid}
        for job_id in orphans:
            later = [
                e.at
                for e in events
                if e.job_id == job_id and e.event == "start" and e.at > killed_at
            ]
            if later:
                latencies.append(min(later) - killed_at)
    return latencies


@pytest.mark.parametrize("kind", DRIVERS)
def test_r1_sigkill_loop_loses_nothing(
    kind: str,
    backend_for: Callable[[str], QueueConfig],
    fleet_factory: list[Fleet],
    results: list[Result],
    scale: int,
    tmp_path: Path,
) -> None:
    config = dataclasses.replace(backend_for(kind), retry_after_s=LEASE_S)
    ledger = tmp_path / "ledger"
    jobs, kills_wanted, concurrency = 150 * scale, 5 * scale, 4
    ids = Queue.dispatch_many(
        config, [Sleepy(ledger=str(ledger), seconds=0.2) for _ in range(jobs)], tries=10
    )
    fleet = Fleet(config, 3, ["--concurrency", str(concurrency), "--sleep", "0.2"], tmp_path)
    fleet_factory.append(fleet)
    rng = random.Random(1)

    def done() -> set[str]:
        return {e.job_id for e in read_events(ledger) if e.event == "done"}

    deadline = time.monotonic() + 120 * scale
    while len(done()) < jobs and time.monotonic() < deadline:
        time.sleep(1.0)
        if len(fleet.kills) < kills_wanted:
            fleet.kill_one(rng)
        fleet.restart_dead()
    assert fleet.stop() == [0] * len(fleet.workers)

    starts = Counter(e.job_id for e in read_events(ledger) if e.event == "start")
    lost = len(set(ids) - done() - {f.job_id for f in failed_jobs(config)})
    duplicates = sum(starts.values()) - len(starts)
    redelivery = _redelivery_times(ledger, fleet.kills)
    results.append(
        Result("R1", kind, jobs, f"{len(fleet.kills)} SIGKILLs", lost, duplicates,
               max(redelivery, default=None), f"3 workers x {concurrency}, lease {LEASE_S:g} s")
    )  # fmt: skip
    assert lost == 0
    assert failed_jobs(config) == []
    assert duplicates <= len(fleet.kills) * concurrency
    # Bounded redelivery: the lease, plus a recovery pass, plus a worker restart's start-up.
    assert max(redelivery, default=0.0) <= LEASE_S + 5


@pytest.mark.parametrize("kind", ["redis", "database-sqlite"])
def test_r2_sigterm_drains_and_refunds(
    kind: str, backend_for: Callable[[str], QueueConfig], results: list[Result], tmp_path: Path
) -> None:
    config = backend_for(kind)
    ledger = tmp_path / "ledger"
    short = Queue.dispatch_many(config, [Sleepy(ledger=str(ledger), seconds=1) for _ in range(6)])
    long = Queue.dispatch(config, Sleepy(ledger=str(ledger), seconds=60))
    worker = spawn_worker(
        config, "--concurrency", "7", "--shutdown-timeout", "3", log=tmp_path / "w.log"
    )
    try:
        wait_until(lambda: len(read_events(ledger)) >= 7, what="every job to start")
        signalled = time.monotonic()
        worker.send_signal(signal.SIGTERM)
        code = worker.wait(timeout=30)
        took = time.monotonic() - signalled
    finally:
        worker.kill()
    finished = {e.job_id for e in read_events(ledger) if e.event == "done"}
    results.append(
        Result("R2", kind, 7, "SIGTERM, shutdown timeout 3 s", 0, 0, None,
               f"exit {code} after {took:.1f} s; the 60 s job put back, attempt refunded")
    )  # fmt: skip
    assert code == 0
    assert finished == set(short)
    assert Queue.size(config) == 1
    # The long job comes back with its attempt refunded: the next worker sees attempt 1.
    second = spawn_worker(
        config, "--max-jobs", "1", "--shutdown-timeout", "0", log=tmp_path / "2.log"
    )
    try:
        wait_until(
            lambda: len([e for e in read_events(ledger) if e.job_id == long]) == 2, what="restart"
        )
        second.send_signal(signal.SIGTERM)
        second.wait(timeout=30)
    finally:
        second.kill()
    assert [e.attempt for e in read_events(ledger) if e.job_id == long] == [1, 1]


@pytest.mark.parametrize("kind", ["redis", "database-sqlite"])
def test_r13_job_that_kills_its_worker_is_failed_after_its_tries(
    kind: str,
    backend_for: Callable[[str], QueueConfig],
    fleet_factory: list[Fleet],
    results: list[Result],
    tmp_path: Path,
) -> None:
    config = dataclasses.replace(backend_for(kind), retry_after_s=1.0)
    ledger = tmp_path / "ledger"
    poison = Queue.dispatch(config, KillsItsWorker(ledger=str(ledger)))
    # Jobs running beside the poison die with it, and each death costs them an attempt too:
    # give them tries enough to outlive three such deaths (docs/reliability.md says so).
    normal = Queue.dispatch_many(config, [Record(ledger=str(ledger)) for _ in range(100)], tries=10)
    fleet = Fleet(config, 1, ["--sleep", "0.2", "--concurrency", "4"], tmp_path)
    fleet_factory.append(fleet)

    def settled() -> bool:
        normal_done = {e.job_id for e in read_events(ledger) if e.event == "done"}
        return normal_done == set(normal) and any(f.job_id == poison for f in failed_jobs(config))

    deadline = time.monotonic() + 60
    while not settled() and time.monotonic() < deadline:
        time.sleep(0.2)
        fleet.restart_dead()  # as a supervisor would
    fleet.stop()
    poison_starts = [e for e in read_events(ledger) if e.job_id == poison]
    (failure,) = [f for f in failed_jobs(config) if f.job_id == poison]
    results.append(
        Result("R13", kind, 101, "a job calling os._exit(137), tries 3", 0, 0, None,
               f"{len(poison_starts)} deliveries, {fleet.restarts} worker restarts, then failed")
    )  # fmt: skip
    assert len(poison_starts) == 3
    assert failure.exception.startswith("runequeue.errors.LeaseExpired")
    assert {e.job_id for e in read_events(ledger) if e.event == "done"} == set(normal)
    assert fleet.restarts == 3


@pytest.mark.parametrize("kind", [*DRIVERS, "database-mysql"])
def test_r28_a_poison_job_takes_no_neighbour_down_with_default_tries(
    kind: str,
    backend_for: Callable[[str], QueueConfig],
    fleet_factory: list[Fleet],
    results: list[Result],
    tmp_path: Path,
) -> None:
    """Issue 11, item 7: the jobs running beside a poison job die with it, but only once. Recovered
    from the dead worker, each runs alone, so the poison's next deliveries kill nothing else and
    no healthy job fails for it, at the default three tries."""
    config = dataclasses.replace(backend_for(kind), retry_after_s=1.0)
    ledger = tmp_path / "ledger"
    poison = Queue.dispatch(config, KillsItsWorker(ledger=str(ledger), after_s=0.3))
    # The poison dies 0.3 s in; the three jobs taken with it are 1 s long, so they are mid-run.
    beside = [Sleepy(ledger=str(ledger), seconds=1.0) for _ in range(3)]
    rest = [Sleepy(ledger=str(ledger), seconds=0.05) for _ in range(197)]
    normal = Queue.dispatch_many(config, beside + rest)
    fleet = Fleet(config, 1, ["--sleep", "0.2", "--concurrency", "4"], tmp_path)
    fleet_factory.append(fleet)

    def settled() -> bool:
        normal_done = {e.job_id for e in read_events(ledger) if e.event == "done"}
        failed = {f.job_id for f in failed_jobs(config)}
        return poison in failed and normal_done | failed >= set(normal)

    deadline = time.monotonic() + 60
    while not settled() and time.monotonic() < deadline:
        time.sleep(0.2)
        fleet.restart_dead()  # as a supervisor would
    fleet.stop()
    events = read_events(ledger)
    poison_starts = [e for e in events if e.job_id == poison]
    killed_pids = {e.pid for e in poison_starts}
    done = {(e.job_id, e.pid) for e in events if e.event == "done"}
    victims = {e.job_id for e in events if e.pid in killed_pids and e.event == "start"
               and e.job_id != poison and (e.job_id, e.pid) not in done}  # fmt: skip
    healthy_failed = [f.job_id for f in failed_jobs(config) if f.job_id != poison]
    results.append(
        Result("R28", kind, 201, "a job calling os._exit(137) among 200 jobs, default tries (3)",
               0, len(victims), None,
               f"{len(poison_starts)} deliveries; {len(victims)} neighbours killed once, each run "
               f"alone after; {len(healthy_failed)} healthy jobs failed")
    )  # fmt: skip
    assert healthy_failed == []
    assert len(poison_starts) == 3
    # Killed beside the first delivery only: the two later ones run alone and kill no one.
    assert 1 <= len(victims) <= 3
    assert {e.job_id for e in events if e.event == "done"} == set(normal)
    assert "ALONE" in fleet.log_text()


@pytest.mark.parametrize("kind", ["redis", "database-sqlite"])
def test_r14_blocked_event_loop_keeps_its_lease(
    kind: str, backend_for: Callable[[str], QueueConfig], results: list[Result], tmp_path: Path
) -> None:
    config = dataclasses.replace(backend_for(kind), retry_after_s=1.5)
    ledger = tmp_path / "ledger"
    job_id = Queue.dispatch(config, BlockingSleepy(ledger=str(ledger), seconds=5))
    worker = spawn_worker(config, "--max-jobs", "1", log=tmp_path / "first.log")
    wait_until(lambda: len(read_events(ledger)) == 1, what="the job to start")
    rival = spawn_worker(config, "--max-time", "6", "--sleep", "0.3", log=tmp_path / "rival.log")
    try:
        assert worker.wait(timeout=30) == 0
        assert rival.wait(timeout=30) == 0
    finally:
        worker.kill()
        rival.kill()
    starts = [e for e in read_events(ledger) if e.event == "start"]
    results.append(
        Result("R14", kind, 1, "5 s time.sleep on the event loop, lease 1.5 s", 0,
               len(starts) - 1, None, "renewed from the heartbeat thread")
    )  # fmt: skip
    assert [e.job_id for e in starts] == [job_id]
    assert "LOST" not in (tmp_path / "first.log").read_text()


@pytest.mark.parametrize("kind", ["redis", "database-sqlite"])
def test_r15_paused_worker_loses_its_lease_and_its_ack(
    kind: str, backend_for: Callable[[str], QueueConfig], results: list[Result], tmp_path: Path
) -> None:
    config = dataclasses.replace(backend_for(kind), retry_after_s=1.0)
    ledger = tmp_path / "ledger"
    job_id = Queue.dispatch(config, Sleepy(ledger=str(ledger), seconds=2))
    paused = spawn_worker(config, "--max-time", "8", log=tmp_path / "paused.log")
    wait_until(lambda: len(read_events(ledger)) == 1, what="the job to start")
    paused.send_signal(signal.SIGSTOP)
    other = spawn_worker(config, "--max-jobs", "1", "--sleep", "0.2", log=tmp_path / "other.log")
    try:
        assert other.wait(timeout=30) == 0  # it ran the job whose lease expired
        paused.send_signal(signal.SIGCONT)
        assert paused.wait(timeout=30) == 0
    finally:
        for process in (paused, other):
            process.send_signal(signal.SIGCONT)
            process.kill()
            process.wait(timeout=10)  # reaped here, not garbage in a later test
    starts = [e for e in read_events(ledger) if e.event == "start"]
    results.append(
        Result("R15", kind, 1, "SIGSTOP 1 worker for > lease", 0, len(starts) - 1, None,
               "the stale worker's ack is refused and logged LOST")
    )  # fmt: skip
    assert [e.job_id for e in starts] == [job_id, job_id]
    assert "LOST" in (tmp_path / "paused.log").read_text()
    assert failed_jobs(config) == []
    assert Queue.size(config) == 0
