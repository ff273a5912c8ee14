"""How every library's no-op job reports that it ran, the same way for all of them.

The handler only bumps an in-process counter (and, in latency runs, notes how long the job
waited); a thread flushes both to Redis every 20 ms. So a completion costs no round trip of its
own, and the benchmark measures the queue, not the reporting.
"""

from __future__ import annotations

import os
import threading
import time

import redis

REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
# Keys of this run's own: the harness sets BENCH_RUN and its workers inherit it, so two runs on
# one Redis never reset each other's counts.
RUN = os.environ.setdefault("BENCH_RUN", str(os.getpid()))
DONE_KEY = f"bench:{RUN}:done"
LATENCY_KEY = f"bench:{RUN}:latency"


class Completion:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._count = 0
        self._latencies: list[float] = []
        self._client: redis.Redis | None = None
        self._thread: threading.Thread | None = None

    def bump(self, sent_at: float = 0.0) -> None:
        started = time.time()
        with self._lock:
            self._count += 1
            if sent_at:
                self._latencies.append(started - sent_at)
        if self._thread is None:
            self._start()

    def _start(self) -> None:
        with self._lock:
            if self._thread is not None:
                return
            self._client = redis.Redis.from_url(REDIS_URL)
            self._thread = threading.Thread(target=self._flush_forever, daemon=True)
            self._thread.start()

    def _flush_forever(self) -> None:
        while True:
            time.sleep(0.02)
            with self._lock:
                count, self._count = self._count, 0
                latencies, self._latencies = self._latencies, []
            if count and self._client is not None:
                with self._client.pipeline(transaction=False) as pipe:
                    pipe.incrby(DONE_KEY, count)
                    if latencies:
                        pipe.rpush(LATENCY_KEY, *latencies)
                    pipe.execute()


completion = Completion()
