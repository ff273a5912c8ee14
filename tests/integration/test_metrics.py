"""Prometheus metrics of a worker: aggregated in memory, served behind a bearer token on loopback,
with bounded labels."""

from __future__ import annotations

import socket
import urllib.error
import urllib.request
from pathlib import Path
from types import SimpleNamespace

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from runequeue import Queue, QueueConfig
from runequeue.drivers.base import QueueCounts
from runequeue.metrics import JobMetrics
from runequeue.prometheus import WorkerCollector
from tests.support.jobs import AlwaysFails, Record, read_ledger
from tests.workers import spawn_worker, wait_until


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_counts_and_histograms_with_bounded_labels() -> None:
    metrics = JobMetrics()
    metrics.record("default", "tests.Record", "DONE", 0.02, 0.5)
    metrics.record("default", "tests.Record", "DONE", 3.0, 0.1)
    metrics.record("default", "tests.Record", "RETRY", 0.01, 0.1)
    metrics.record("default", "<script>evil-9f2c", "FAIL", 0.0, 0.0)  # not a registered class
    registry = CollectorRegistry()
    read_back = SimpleNamespace(
        queue_counts={"default": QueueCounts(ready=4, delayed=2, reserved=1)}, workers=3
    )
    registry.register(WorkerCollector(metrics, read_back))

    found = samples(generate_latest(registry).decode())

    done = ("runequeue_jobs_total", (("job", "tests.Record"), ("queue", "default"),
                                     ("status", "done")))  # fmt: skip
    assert found[done] == 2
    assert found["runequeue_jobs_total", (("job", "unknown"), ("queue", "default"),
                                          ("status", "failed"))] == 1  # fmt: skip
    labels = (("job", "tests.Record"), ("queue", "default"))
    assert found["runequeue_job_duration_seconds_count", labels] == 3
    assert found["runequeue_job_duration_seconds_bucket", (*labels[:1], ("le", "0.025"),
                                                           labels[1])] == 2  # fmt: skip
    assert found["runequeue_job_wait_seconds_count", (("queue", "default"),)] == 4
    size = "runequeue_queue_size"
    assert found[size, (("queue", "default"), ("state", "ready"))] == 4
    assert found[size, (("queue", "default"), ("state", "delayed"))] == 2
    assert found[size, (("queue", "default"), ("state", "reserved"))] == 1
    assert found["runequeue_workers", ()] == 3
    assert not any("evil" in str(key) for key in found)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _get(url: str, token: str | None) -> tuple[int, str]:
    request = urllib.request.Request(url)
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def test_a_worker_serves_its_metrics_behind_a_token(
    config: QueueConfig, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RUNE_METRICS_TOKEN", "s3cret")
    port = _free_port()
    url = f"http://127.0.0.1:{port}/metrics"
    ledger = str(tmp_path / "ledger")
    Queue.dispatch_many(config, [Record(ledger) for _ in range(3)])
    Queue.dispatch(config, AlwaysFails(ledger))
    worker = spawn_worker(config, "--metrics-port", str(port), "--sleep", "0.2",
                          log=tmp_path / "worker.log")  # fmt: skip
    try:
        wait_until(lambda: len(read_ledger(Path(ledger))) >= 5, what="the jobs to run")
        wait_until(lambda: _get(url, "s3cret")[0] == 200, what="the metrics server")
        assert _get(url, None)[0] == 401
        assert _get(url, "wrong")[0] == 401
        _, text = _get(url, "s3cret")
        found = samples(text)
        done = ("runequeue_jobs_total", (("job", "tests.Record"), ("queue", "default"),
                                         ("status", "done")))  # fmt: skip
        assert found[done] == 3
        ready = ("runequeue_queue_size", (("queue", "default"), ("state", "ready")))
        # Read back from the backend at each flush (every 5 s), not at scrape time.
        wait_until(lambda: samples(_get(url, "s3cret")[1]).get(ready) == 0, what="the queue "
                   "size read back after the jobs ran")  # fmt: skip
        wait_until(lambda: samples(_get(url, "s3cret")[1]).get(("runequeue_workers", ())) == 1,
                   what="the live workers read back")  # fmt: skip
        log = tmp_path / "worker.log"
        served = f"metrics on http://127.0.0.1:{port}/metrics"  # loopback by default
        wait_until(lambda: served in log.read_text(encoding="utf-8"), what="the log line")
        assert "s3cret" not in log.read_text(encoding="utf-8")  # a token given is not printed
    finally:
        worker.kill()
        worker.wait(timeout=10)
