"""How a worker runs: the ``rune queue:work`` flags, as one frozen record."""

from __future__ import annotations

import dataclasses
import functools

from runequeue.job import Backoff
from runequeue.runner import JobDefaults

# Jobs a worker runs at once unless told. 50, not 10: a reserve takes at most as many jobs as
# there are free slots, so at 10 a PostgreSQL worker spent its time waiting on round trips (about
# 6,000 no-op jobs/s against 11,000 at 50; docs/benchmarks.md). Async jobs cost a task each;
# plain `def handle` jobs get as many threads, so a worker whose plain jobs each hold a database
# connection wants --concurrency at most its pool's size.
DEFAULT_CONCURRENCY = 50


@dataclasses.dataclass(frozen=True)
class WorkerOptions:
    """How a worker runs; the ``rune queue:work`` flags.

    Attributes:
        queues: queue names in priority order: the first is drained before the next is looked at.
        concurrency: jobs run at once (plain ``def handle`` jobs run in as many threads).
        tries, timeout_s, backoff: defaults for jobs that set none.
        sleep_s: longest wait for new work before looking again (a new job wakes it at once).
        max_jobs, max_time_s: stop after this many jobs or seconds (a supervisor restarts it).
        stop_when_empty: stop once the queues are empty and running jobs are done.
        shutdown_timeout_s: on SIGTERM, how long running jobs may finish before they are put back.
        lease_s: lease length, renewed every ``lease_s / 3``. ``None`` (the default) takes the
            configuration's ``retry_after_s`` (``QUEUE_RETRY_AFTER``) in `run_worker`: the lease
            is one setting, not two to keep equal by hand.
        sweep_interval_s: how often expired leases and due delayed jobs are recovered when no
            reserve does it, and failed jobs waiting in the outbox are recorded.
        strict: refuse to start when the backend cannot be reached or could lose jobs (no
            persistence, eviction).
        handle_signals: SIGTERM and SIGINT stop the worker gracefully (a second one puts its
            running jobs back at once). ``rune queue:work`` sets it; leave it off for a worker
            embedded in an application's event loop (a FastAPI lifespan, a test), whose signals
            are the application's: stop that worker by cancelling its task.
        metrics_port, metrics_host, metrics_token: serve Prometheus metrics on
            ``http://metrics_host:metrics_port/metrics`` (`runequeue.prometheus`), answering only
            ``Authorization: Bearer <metrics_token>`` (one is made up and logged when unset).
            Off by default.
        publish_metrics: publish per-minute metrics and the last jobs run to the backend every
            few seconds, for ``rune dashboard`` (`runequeue.metrics_publisher`). On by default;
            ``rune queue:work --no-metrics`` turns it off.
    """

    queues: tuple[str, ...] = ("default",)
    concurrency: int = DEFAULT_CONCURRENCY
    tries: int = 3
    timeout_s: float | None = 60.0
    backoff: Backoff = 0
    sleep_s: float = 3.0
    max_jobs: int | None = None
    max_time_s: float | None = None
    stop_when_empty: bool = False
    shutdown_timeout_s: float = 25.0
    lease_s: float | None = None
    sweep_interval_s: float = 5.0
    strict: bool = False
    handle_signals: bool = False
    metrics_port: int | None = None
    metrics_host: str = "127.0.0.1"
    metrics_token: str | None = dataclasses.field(default=None, repr=False)
    publish_metrics: bool = True

    @functools.cached_property
    def defaults(self) -> JobDefaults:
        return JobDefaults(tries=self.tries, timeout_s=self.timeout_s, backoff=self.backoff)
