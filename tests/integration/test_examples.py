"""The examples the README points to run as printed."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from runequeue import Queue, QueueConfig

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


def test_the_fastapi_example_dispatches_from_its_handler(config: QueueConfig) -> None:
    from examples.fastapi_app import SendWelcomeEmail, create_app
    from starlette.testclient import TestClient

    with Queue.fake() as fake, TestClient(create_app(config)) as client:
        reply = client.post("/signup", params={"email": "ada@example.com"})
        assert reply.status_code == 200
        fake.assert_dispatched(SendWelcomeEmail, lambda job: job.email == "ada@example.com")
    with TestClient(create_app(config)) as client:  # and for real, on the test's Redis
        job_id = client.post("/signup", params={"email": "bob@example.com"}).json()["queued"]
    assert len(job_id) == 32 and Queue.size(config) == 1
