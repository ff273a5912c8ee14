"""The examples the README points to run as printed."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_workflows_tour_runs() -> None:
    run = subprocess.run(
        [sys.executable, "examples/workflows.py"], cwd=ROOT, capture_output=True, text=True,
        timeout=120,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    out = run.stdout
    assert "chain step fetch\n  chain step render\n  chain step mail" in out
    assert "batch 'import': 20/20 jobs, 100% -> then ran" in out
    assert "1 job stored" in out
    assert sum(f"API call {n}" in out for n in range(5)) == 5
    assert "events: heard 30 jobs processed" in out
