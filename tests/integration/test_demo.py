"""The README's first command: `rune demo` on the embedded SQLite default, in an empty directory."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def test_demo_runs_end_to_end_and_tells_it_in_order(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("QUEUE_", "DATABASE_URL"))}
    done = subprocess.run(
        [sys.executable, "-m", "runequeue", "demo"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    out = done.stdout + done.stderr
    assert done.returncode == 0, out
    assert "worker stopped after 4 job(s)" in out
    assert "FAIL  demo.ChargeCard" in out
    # The worker's batched log lines come out before what the demo prints after the worker.
    assert out.index("worker stopped") < out.index("queue:failed")
    assert "card declined for order 42" in out.split("queue:failed", 1)[1]
