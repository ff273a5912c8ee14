"""Prometheus metrics of a worker (``rune queue:work --metrics-port 9464``): its `JobMetrics`,
and its queues' sizes read at scrape time, served by ``prometheus_client`` on loopback unless told
otherwise, behind a bearer token.

Metrics (labels bounded: queues and registered job names, never job ids):

- ``runequeue_jobs_total{queue,job,status}``: attempts by outcome (done, failed, retried,
  released, deferred);
- ``runequeue_job_duration_seconds{queue,job}``: run time, a histogram;
- ``runequeue_job_wait_seconds{queue}``: dispatch to start (a delayed job's delay included);
- ``runequeue_jobs_running``: jobs this worker runs now;
- ``runequeue_queue_size{queue}``: jobs waiting, delayed or running on each of its queues.
"""

from __future__ import annotations

import hmac
import itertools
import logging
import secrets
import threading
from collections.abc import Callable, Iterable, Sequence
from http.server import ThreadingHTTPServer

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import MetricsHandler
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from runequeue.metrics import BUCKETS, Histogram, JobMetrics

log = logging.getLogger("runequeue.worker")

QueueSizes = Callable[[], dict[str, int]]


class WorkerCollector(Collector):
    """The metrics families of one worker, built from a snapshot at each scrape."""

    def __init__(self, metrics: JobMetrics, queue_sizes: QueueSizes | None = None) -> None:
        self.metrics = metrics
        self.queue_sizes = queue_sizes

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
        if self.queue_sizes is not None:
            sizes = GaugeMetricFamily(
                "runequeue_queue_size", "Jobs waiting, delayed or running.", labels=["queue"]
            )
            try:
                for queue, size in sorted(self.queue_sizes().items()):
                    sizes.add_metric([queue], size)
            except Exception as exc:  # the backend away: the other metrics still go out
                log.warning("metrics: could not read queue sizes: %s", exc)
                return
            yield sizes


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
    queue_sizes: QueueSizes | None = None,
) -> MetricsServer:
    """Start serving ``metrics``; a token is made up (and logged) when none is given."""
    registry = CollectorRegistry(auto_describe=True)
    registry.register(WorkerCollector(metrics, queue_sizes))
    if not token:
        token = secrets.token_urlsafe(24)
        log.warning("metrics token (set RUNE_METRICS_TOKEN to choose one): %s", token)
    server = MetricsServer(registry, host=host, port=port, token=token)
    server.start()
    log.info("metrics on %s (Authorization: Bearer <token>)", server.address)
    return server


def queue_sizes_of(size: Callable[[str], int], queues: Sequence[str]) -> QueueSizes:
    def sizes() -> dict[str, int]:
        return {queue: size(queue) for queue in queues}

    return sizes
