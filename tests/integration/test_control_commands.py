"""`rune workers`, `queue:pause`/`resume`, `queue:monitor` and `queue:restart`, against a worker
running in another process, on Redis."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import msgspec

from runequeue import Queue, QueueConfig
from tests.integration.test_failed_jobs import run_cli
from tests.support.jobs import Record
from tests.workers import spawn_worker, wait_until


def test_see_pause_monitor_and_restart_a_running_worker(
    config: QueueConfig, tmp_path: Path
) -> None:
    config = dataclasses.replace(config, retry_after_s=5)
    worker = spawn_worker(config, "--sleep", "0.2", log=tmp_path / "worker.log")
    try:
        wait_until(lambda: "running" in run_cli(["workers", "--json"], config), what="a record")
        (record,) = [msgspec.json.decode(line) for line in
                     run_cli(["workers", "--json"], config).splitlines()]  # fmt: skip
        assert record["pid"] == worker.pid and record["queues"] == ["default"]
        assert str(worker.pid) in run_cli(["workers"], config)

        assert "paused default" in run_cli(["queue:pause", "default"], config)
        run_cli(["queue:pause", "default"], config)  # twice is fine
        time.sleep(1.5)  # workers read the signals every second
        Queue.dispatch(config, Record(str(tmp_path / "ledger")))
        Queue.dispatch(config, Record(str(tmp_path / "ledger")))
        out = run_cli(["queue:monitor", "default:1,other:5"], config, exit_code=1)
        assert "OVER default: 2 / 1 (paused)" in out and "ok other: 0 / 5" in out

        run_cli(["queue:resume", "default"], config)
        wait_until(lambda: Queue.size(config) == 0, what="the jobs to run after resume")
        assert "ok default: 0 / 1" in run_cli(["queue:monitor", "default:1"], config)

        assert "restart signalled" in run_cli(["queue:restart"], config)
        assert worker.wait(timeout=20) == 0
        assert "no live workers" in run_cli(["workers"], config)
    finally:
        worker.kill()
    assert "write QUEUE:MAX" in run_cli(["queue:monitor", "default"], config, exit_code=2)
