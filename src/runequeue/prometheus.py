"""Prometheus metrics of a worker (``rune queue:work --metrics-port 9464``): its `JobMetrics`,
and its queues' sizes read at scrape time, served by ``prometheus_client`` on loopback unless told
otherwise, behind a bearer token.

Metrics (labels bounded: queues and registered job names, never job ids):

- ``runequeue_jobs_total{queue,job,status}``: attempts by outcome (done, failed, retried,
  released, deferred);
- ``runequeue_job_duration_seconds{queue,job}``: run time, a histogram;
- ``runequeue_job_wait_seconds{queue}``: dispatch to start (a delayed job's delay included);
- ``runequeue_jobs_running``: jobs this worker runs now;
- ``runequeue_queue_size{queue,state}``: jobs of each of its queues by state (ready, delayed,
  reserved), and ``runequeue_workers``: live workers of its backend, both read from the backend
  with each metrics flush (every few seconds), never at scrape time.

The dashboard's ``/metrics`` (`runequeue.dashboard`) serves the backend-wide ones:
``runequeue_queue_size``, ``runequeue_workers`` and ``runequeue_failed_jobs{queue}``.
"""

from __future__ import annotations

import hmac
import itertools
import logging
import secrets
import threading
from collections.abc import Iterable, Sequence
from http.server import ThreadingHTTPServer
from typing import TYPE_CHECKING, Protocol

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.exposition import MetricsHandler
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from runequeue.drivers.base import QueueCounts
from runequeue.metrics import BUCKETS, Histogram, JobMetrics

if TYPE_CHECKING:
    from runequeue.dashboard.reader import DashboardReader

log = logging.getLogger("runequeue.worker")


class ReadBack(Protocol):
    """Backend figures a worker reads at each metrics flush (`MetricsPublisher`)."""

    queue_counts: dict[str, QueueCounts]
    workers: int | None


class WorkerCollector(Collector):
    """The metrics families of one worker, built from a snapshot at each scrape."""

    def __init__(self, metrics: JobMetrics, read_back: ReadBack | None = None) -> None:
        self.metrics = metrics
        self.read_back = read_back

    def collect(self) -> Iterable[Metric]:
        snap = self.metrics.snapshot()
        jobs = CounterMetricFamily("runequeue_jobs", "Job attempts, by outcome.",
                                   labels=["queue", "job", "status"])  # fmt: skip
        for (queue, job, status), count in sorted(snap.jobs.items()):
            jobs.add_metric([queue, job, status], count)
        yield jobs
        duration = HistogramMetricFamily(
            "runequeue_job_duration_seconds", "How long attempts ran.", labels=["queue", "job"]
        )
        for (queue, job), histogram in sorted(snap.run_time.items()):
            duration.add_metric([queue, job], _buckets(histogram), histogram.total)
        yield duration
        wait = HistogramMetricFamily(
            "runequeue_job_wait_seconds", "From dispatch to the start of a job.", labels=["queue"]
        )
        for queue, histogram in sorted(snap.wait_time.items()):
            wait.add_metric([queue], _buckets(histogram), histogram.total)
        yield wait
        yield GaugeMetricFamily("runequeue_jobs_running", "Jobs this worker runs now.",
                                value=snap.running)  # fmt: skip
        if self.read_back is not None:
            yield queue_size_family(self.read_back.queue_counts)
            if self.read_back.workers is not None:
                yield workers_family(self.read_back.workers)


def queue_size_family(counts: dict[str, QueueCounts]) -> GaugeMetricFamily:
    sizes = GaugeMetricFamily("runequeue_queue_size", "Jobs of a queue, by state.",
                              labels=["queue", "state"])  # fmt: skip
    for queue, count in sorted(counts.items()):
        for state in ("ready", "delayed", "reserved"):
            sizes.add_metric([queue, state], getattr(count, state))
    return sizes


def workers_family(workers: int) -> GaugeMetricFamily:
    return GaugeMetricFamily("runequeue_workers", "Live workers of the backend.", value=workers)


def _buckets(histogram: Histogram) -> list[tuple[str, float]]:
    cumulative = itertools.accumulate(histogram.counts)
    return [(_bound(bound), float(count)) for bound, count in zip(BUCKETS, cumulative, strict=True)]


def _bound(bound: float) -> str:
    return "+Inf" if bound == float("inf") else repr(bound)


class MetricsServer:
    """``/metrics`` over HTTP in a daemon thread, answering only ``Authorization: Bearer
    <token>``."""

    def __init__(self, registry: CollectorRegistry, *, host: str, port: int, token: str) -> None:
        handler = _authorized_handler(registry, token)
        self.httpd = ThreadingHTTPServer((host, port), handler)
        self.httpd.daemon_threads = True
        self.address = f"http://{host}:{self.httpd.server_address[1]}/metrics"
        self._thread = threading.Thread(target=self.httpd.serve_forever, name="runequeue-metrics",
                                        daemon=True)  # fmt: skip

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def _authorized_handler(registry: CollectorRegistry, token: str) -> type[MetricsHandler]:
    expected = f"Bearer {token}".encode()

    class Handler(MetricsHandler):
        def do_GET(self) -> None:
            given = (self.headers.get("Authorization") or "").encode()
            if not hmac.compare_digest(given, expected):
                self.send_response(401)
                self.send_header("WWW-Authenticate", 'Bearer realm="runequeue metrics"')
                self.send_header("Content-Type", "text/plain; charset=utf-8")
                self.end_headers()
                self.wfile.write(b"401: send Authorization: Bearer <RUNE_METRICS_TOKEN>\n")
                return
            super().do_GET()

    Handler.registry = registry
    return Handler


def serve_worker_metrics(
    metrics: JobMetrics,
    *,
    host: str,
    port: int,
    token: str | None,
    read_back: ReadBack | None = None,
) -> MetricsServer:
    """Start serving ``metrics``; a token is made up (and logged) when none is given."""
    registry = CollectorRegistry(auto_describe=True)
    registry.register(WorkerCollector(metrics, read_back))
    if not token:
        token = secrets.token_urlsafe(24)
        log.warning("metrics token (set RUNE_METRICS_TOKEN to choose one): %s", token)
    server = MetricsServer(registry, host=host, port=port, token=token)
    server.start()
    log.info("metrics on %s (Authorization: Bearer <token>)", server.address)
    return server


class _Families(Collector):
    """Families built beforehand (the dashboard reads them from the backend asynchronously)."""

    def __init__(self, families: Sequence[Metric]) -> None:
        self.families = families

    def collect(self) -> Iterable[Metric]:
        return self.families


async def dashboard_metrics(reader: DashboardReader) -> tuple[bytes, str]:
    """The dashboard's ``/metrics``: the backend's queues by state, its live workers, and its
    failed jobs by queue, read now; and the exposition's content type."""
    queues = await reader.queues(fresh=True)
    failed = GaugeMetricFamily("runequeue_failed_jobs", "Jobs in the failed-job store.",
                               labels=["queue"])  # fmt: skip
    for row in queues:
        failed.add_metric([row.name], row.failed_jobs)
    families = [
        queue_size_family({row.name: row.counts for row in queues}),
        workers_family(len(await reader.workers())),
        failed,
    ]
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Families(families))
    return generate_latest(registry), CONTENT_TYPE_LATEST
