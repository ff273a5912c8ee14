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


def test_the_flask_example_and_flask_rune(config: QueueConfig) -> None:
    from examples.flask_app import SendWelcome, create_app

    app = create_app({"driver": "redis", "redis_url": config.redis_url,
                      "redis_prefix": config.redis_prefix,
                      "database_url": config.database_url})  # fmt: skip
    with Queue.fake() as fake:
        assert app.test_client().post("/signup", data={"email": "ada@x.org"}).status_code == 200
        fake.assert_dispatched(SendWelcome, lambda job: job.email == "ada@x.org")
    app.test_client().post("/signup", data={"email": "bob@x.org"})
    assert Queue.size(config) == 1  # the app's configuration: the test's Redis prefix
    size = app.test_cli_runner().invoke(args=["rune", "queue:size"])
    assert size.exit_code == 0, size.output
    assert size.output == "default: 1\n"
