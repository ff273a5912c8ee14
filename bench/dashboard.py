"""``python -m bench.dashboard``: how fast the dashboard's overview answers on a big backend.

Fills a backend of its own (a Redis key prefix, or a fresh PostgreSQL database) with 1,000,000
queued jobs, 10,000 failed jobs and an hour of per-minute metrics from four workers, serves the
dashboard under uvicorn on loopback, and times ``GET /`` (the overview) over HTTP: median and
p95 of the requests after a warm-up. Everything it made is deleted afterwards.

    python -m bench.dashboard --backend redis --backend postgresql
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import statistics
import tempfile
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import redis
import sqlalchemy as sa
import uvicorn

from runequeue import QueueConfig
from runequeue.dashboard import app
from runequeue.db_engine import create_engine
from runequeue.drivers import open_driver, open_producer
from runequeue.drivers.base import Outgoing
from runequeue.failed_job import FailedJob
from runequeue.failed_store import FailedJobStore
from runequeue.metrics import JobMetrics
from runequeue.metrics_history import MinuteBuckets, store
from runequeue.payload import new_job_id
from runequeue.schema import migrate

TOKEN = "bench"
POSTGRES = "postgresql://postgres@127.0.0.1:5432"
CHUNK = 10_000


def _payload(job_id: str) -> bytes:
    return (f'{{"v":3,"id":"{job_id}","job":"bench.Noop","data":{{"n":1}},"queue":"default",'
            f'"created_at":{time.time()}}}').encode()  # fmt: skip


def fill(config: QueueConfig, jobs: int, failed: int, workers: int) -> None:
    producer = open_producer(config)
    started = time.perf_counter()
    for first in range(0, jobs, CHUNK):
        ids = [new_job_id() for _ in range(min(CHUNK, jobs - first))]
        producer.push([Outgoing(i, "default", _payload(i)) for i in ids])
    producer.close()
    print(f"  {jobs:,} jobs queued in {time.perf_counter() - started:.0f} s")
    failures = FailedJobStore(config.database_url)
    for n in range(failed):
        job_id = new_job_id()
        failures.record(FailedJob(job_id, config.driver, "default", _payload(job_id),
                                  f"app.Boom: failure {n}\nTraceback ..."))  # fmt: skip
    failures.close()
    asyncio.run(_publish_an_hour(config, workers))
    print(f"  {failed:,} failed jobs and an hour of metrics from {workers} workers stored")
    if config.driver == "database":
        # What PostgreSQL's autovacuum does by itself after a bulk insert (its insert
        # threshold): marks the pages all-visible, so counts read the index alone.
        engine = create_engine(config.database_url).execution_options(isolation_level="AUTOCOMMIT")
        with engine.connect() as conn:
            conn.execute(sa.text("VACUUM ANALYZE jobs"))
        engine.dispose()


async def _publish_an_hour(config: QueueConfig, workers: int) -> None:
    driver = open_driver(config)
    now = time.time()
    try:
        for worker in range(workers):
            metrics, buckets = JobMetrics(), MinuteBuckets()
            for minute in range(60):
                for n in range(500):
                    metrics.record("default", "bench.Noop", "DONE" if n % 50 else "FAIL",
                                   0.001 * (n % 7), 0.01 * (n % 11))  # fmt: skip
                moment = now - (59 - minute) * 60
                bucket = buckets.add(metrics.snapshot(), moment)
                assert bucket is not None
                await store(driver.control(), f"bench-worker-{worker}", bucket)
    finally:
        await driver.close()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def serving(config: QueueConfig) -> Iterator[str]:
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(app(config, token=TOKEN), host="127.0.0.1", port=port,
                                           log_level="warning", lifespan="on"))  # fmt: skip
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def time_overview(url: str, requests: int) -> tuple[float, list[float]]:
    """The first request's time (a cold start: connections, templates, counts read in line),
    and those of the requests after a warm-up of three, in ms."""
    request = urllib.request.Request(f"{url}/", headers={"Authorization": f"Bearer {TOKEN}"})
    timings = []
    for _ in range(requests + 3):
        started = time.perf_counter()
        with urllib.request.urlopen(request, timeout=30) as response:
            assert response.status == 200
            body = response.read()
        timings.append((time.perf_counter() - started) * 1000)
    assert b"1,000,000" in body or b"default" in body
    return timings[0], timings[3:]


@contextmanager
def backend(kind: str, folder: Path) -> Iterator[QueueConfig]:
    failed_db = f"sqlite:///{folder / 'failed.sqlite3'}"
    if kind == "redis":
        prefix = f"rqbench-dash-{uuid.uuid4().hex[:8]}"
        migrate(failed_db)
        yield QueueConfig(driver="redis", redis_prefix=prefix, database_url=failed_db)
        client = redis.Redis()
        for keys in _chunks(list(client.scan_iter(match=f"{prefix}:*", count=10_000))):
            client.delete(*keys)
        return
    name = f"rqbench_{uuid.uuid4().hex[:8]}"
    admin = create_engine(f"{POSTGRES}/test").execution_options(isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f"CREATE DATABASE {name}"))
    try:
        url = f"{POSTGRES}/{name}"
        migrate(url)
        yield QueueConfig(driver="database", database_url=url)
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        admin.dispose()


def _chunks(keys: list[bytes]) -> Iterator[list[bytes]]:
    for first in range(0, len(keys), 1000):
        yield keys[first : first + 1000]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", action="append", choices=["redis", "postgresql"])
    parser.add_argument("--jobs", type=int, default=1_000_000)
    parser.add_argument("--failed", type=int, default=10_000)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--requests", type=int, default=30)
    args = parser.parse_args()
    for kind in args.backend or ["redis", "postgresql"]:
        print(f"{kind}:")
        with tempfile.TemporaryDirectory() as folder, backend(kind, Path(folder)) as config:
            fill(config, args.jobs, args.failed, args.workers)
            with serving(config) as url:
                first, timings = time_overview(url, args.requests)
            p95 = statistics.quantiles(timings, n=20)[18]
            print(f"  overview: median {statistics.median(timings):.1f} ms, p95 {p95:.1f} ms "
                  f"over {len(timings)} requests; the first {first:.1f} ms")  # fmt: skip


if __name__ == "__main__":
    main()
