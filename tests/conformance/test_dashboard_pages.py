"""The dashboard on every driver: each page answers, shows the queue's jobs by state, and a
failed job retried from it is back on its queue."""

from __future__ import annotations

import asyncio
from pathlib import Path

from starlette.testclient import TestClient

from runequeue import Queue, QueueConfig
from runequeue.dashboard import app
from runequeue.failed_store import FailedJobStore
from tests.support.jobs import AlwaysFails, Record
from tests.workers import run_worker

PAGES = ["/", "/queues", "/queues/default", "/failed", "/batches", "/workers", "/metrics"]
AUTH = {"Authorization": "Bearer t0ken"}


def test_pages_counts_and_a_retry(backend: QueueConfig, tmp_path: Path) -> None:
    ledger = str(tmp_path / "ledger")
    Queue.dispatch(backend, AlwaysFails(ledger), tries=1)
    asyncio.run(run_worker(backend))  # fails it for good, and publishes its minute
    Queue.dispatch_many(backend, [Record(ledger), Record(ledger)])
    Queue.dispatch(backend, Record(ledger), delay=300)

    with TestClient(app(backend, token="t0ken")) as client:
        for path in PAGES:
            assert client.get(path, headers=AUTH).status_code == 200, path
        metrics = client.get("/metrics", headers=AUTH).text
        assert 'runequeue_queue_size{queue="default",state="ready"} 2.0' in metrics
        assert 'runequeue_queue_size{queue="default",state="delayed"} 1.0' in metrics
        assert 'runequeue_failed_jobs{queue="default"} 1.0' in metrics
        queue_page = client.get("/queues/default", headers=AUTH).text
        assert "tests.AlwaysFails" in queue_page  # its recent jobs, as the worker published

        store = FailedJobStore(backend.database_url)
        (failed,) = store.all()
        store.close()
        reply = client.post("/failed/retry", data={"id": str(failed.id)}, headers=AUTH)
        assert reply.status_code == 200 and "1 job(s) queued again" in reply.text
    assert Queue.size(backend) == 4
