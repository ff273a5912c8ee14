"""One adapter per library: how to clear it, enqueue with it (one call, and in bulk where it has
a bulk API) and start its worker, each as its documentation recommends."""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Protocol

import redis

from bench.completion import REDIS_URL

Enqueue = Callable[[int, bool], None]  # (how many, with a send time for latency)


class Library(Protocol):
    name: str
    setting: str  # the worker setting used, and why

    def clear(self) -> None: ...

    def enqueue_one_by_one(self, count: int, timed: bool = False) -> None: ...

    def enqueue_bulk(self, count: int) -> bool:
        """Enqueue ``count`` jobs with the library's batch API; False if it has none."""

    def worker_command(self) -> list[str]: ...

    def worker_env(self) -> dict[str, str]: ...


def _flush_prefix(prefix: str) -> None:
    client = redis.Redis.from_url(REDIS_URL)
    keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
    if keys:
        client.delete(*keys)
    client.close()


class RuneQueue:
    def __init__(
        self,
        driver: str = "redis",
        database_url: str | None = None,
        *,
        metrics: bool = False,
        publish: bool = True,
    ) -> None:
        from runequeue import QueueConfig
        from runequeue.schema import migrate

        self._failed_db = f"sqlite:///{tempfile.mkdtemp()}/failed.sqlite3"
        self.database_url = database_url or self._failed_db
        self.driver = driver
        backend = self.database_url.split(":")[0].split("+")[0]
        self.name = "runequeue" if driver == "redis" else f"runequeue-{backend}"
        # Its metrics, measured side by side (--only runequeue,runequeue+metrics,
        # runequeue-no-metrics): publishing to the backend is on by default; +metrics adds the
        # Prometheus endpoint (--metrics-port); -no-metrics turns publishing off. On must stay
        # within 5 % of off.
        self.metrics = metrics
        self.publish = publish
        if metrics:
            self.name += "+metrics"
        if not publish:
            self.name += "-no-metrics"
        self.setting = (
            "1 process, --concurrency 200, uvloop (the [uvloop] extra, picked by --loop auto); "
            "its line per job on (written, like every library's output, to /dev/null)"
        )
        migrate(self.database_url)
        self.config = QueueConfig(
            driver=driver, redis_url=REDIS_URL, redis_prefix="bench-rq", queue_name="bench",
            database_url=self.database_url,
        )  # fmt: skip

    def clear(self) -> None:
        from runequeue import Queue

        if self.driver == "redis":
            _flush_prefix("bench-rq:")
        else:
            Queue.clear(self.config)

    def enqueue_one_by_one(self, count: int, timed: bool = False) -> None:
        from bench.tasks_runequeue import NoOp
        from runequeue import Queue

        for _ in range(count):
            Queue.dispatch(self.config, NoOp(sent_at=time.time() if timed else 0.0))
            if timed:
                time.sleep(0.005)

    def enqueue_bulk(self, count: int) -> bool:
        from bench.tasks_runequeue import NoOp
        from runequeue import Queue

        Queue.dispatch_many(self.config, [NoOp() for _ in range(count)])
        return True

    def worker_command(self) -> list[str]:
        command = [sys.executable, "-m", "runequeue", "queue:work", "--queue", "bench"]
        command += ["--metrics-port", "0"] if self.metrics else []  # (any free port)
        command += [] if self.publish else ["--no-metrics"]
        return [*command, "--import", "bench.tasks_runequeue", "--concurrency", "200"]

    def worker_env(self) -> dict[str, str]:
        return {
            "QUEUE_DRIVER": self.driver, "REDIS_URL": REDIS_URL, "QUEUE_REDIS_PREFIX": "bench-rq",
            "DATABASE_URL": self.database_url,
        }  # fmt: skip


class RQ:
    name = "rq"
    setting = "SimpleWorker (no fork per job: RQ's fastest; one job at a time)"

    def __init__(self) -> None:
        from rq import Queue

        self.queue = Queue("bench", connection=redis.Redis.from_url(REDIS_URL))

    def clear(self) -> None:
        _flush_prefix("rq:")

    def enqueue_one_by_one(self, count: int, timed: bool = False) -> None:
        from bench.tasks_rq import noop

        for _ in range(count):
            self.queue.enqueue(noop, time.time() if timed else 0.0)
            if timed:
                time.sleep(0.005)

    def enqueue_bulk(self, count: int) -> bool:
        from rq import Queue

        from bench.tasks_rq import noop

        self.queue.enqueue_many([Queue.prepare_data(noop, (0.0,)) for _ in range(count)])
        return True

    def worker_command(self) -> list[str]:
        return [os.path.join(os.path.dirname(sys.executable), "rq"), "worker", "--url", REDIS_URL,
                "-w", "rq.worker.SimpleWorker", "--disable-job-desc-logging", "bench"]  # fmt: skip

    def worker_env(self) -> dict[str, str]:
        return {}


class Huey:
    name = "huey"
    setting = "huey_consumer -k thread -w 8, polling delay 1-50 ms"

    def __init__(self) -> None:
        import huey  # noqa: F401 - skip this library when it is not installed

    def clear(self) -> None:
        _flush_prefix("huey.")

    def enqueue_one_by_one(self, count: int, timed: bool = False) -> None:
        from bench.tasks_huey import noop

        for _ in range(count):
            noop(time.time() if timed else 0.0)
            if timed:
                time.sleep(0.005)

    def enqueue_bulk(self, count: int) -> bool:
        return False  # no batch API

    def worker_command(self) -> list[str]:
        return [os.path.join(os.path.dirname(sys.executable), "huey_consumer"),
                "bench.tasks_huey.huey", "-k", "thread", "-w", "8", "-d", "0.001", "-m", "0.05",
                "-q"]  # fmt: skip

    def worker_env(self) -> dict[str, str]:
        return {}


class Dramatiq:
    name = "dramatiq"
    setting = "dramatiq -p 1 -t 8 (its default thread count for one process)"

    def __init__(self) -> None:
        import dramatiq  # noqa: F401 - skip this library when it is not installed

    def clear(self) -> None:
        _flush_prefix("bench-dramatiq:")

    def enqueue_one_by_one(self, count: int, timed: bool = False) -> None:
        from bench.tasks_dramatiq import noop

        for _ in range(count):
            noop.send(time.time() if timed else 0.0)
            if timed:
                time.sleep(0.005)

    def enqueue_bulk(self, count: int) -> bool:
        return False  # group() sends one message at a time

    def worker_command(self) -> list[str]:
        return [os.path.join(os.path.dirname(sys.executable), "dramatiq"), "bench.tasks_dramatiq",
                "-p", "1", "-t", "8"]  # fmt: skip

    def worker_env(self) -> dict[str, str]:
        return {}


def _script(name: str) -> str:
    """A console script installed beside this interpreter (the bench virtualenv's)."""
    return os.path.join(os.path.dirname(sys.executable), name)


class Arq:
    name = "arq"
    setting = (
        "arq worker, max_jobs 10 (its default; 100 and 500 were no faster), poll_delay 1 ms "
        "(default 0.5 s adds ~250 ms of latency), keep_result 0, per-job log lines off"
    )

    def __init__(self) -> None:
        import arq  # noqa: F401 - skip this library when it is not installed

    def clear(self) -> None:
        _flush_prefix("arq:")  # job, in-progress and result keys, and the queue "arq:bench"

    def enqueue_one_by_one(self, count: int, timed: bool = False) -> None:
        asyncio.run(self._enqueue(count, timed))  # one event loop for the whole run

    async def _enqueue(self, count: int, timed: bool) -> None:
        from arq import create_pool
        from arq.connections import RedisSettings

        from bench.tasks_arq import QUEUE

        pool = await create_pool(RedisSettings.from_dsn(REDIS_URL), default_queue_name=QUEUE)
        try:
            for _ in range(count):
                await pool.enqueue_job("noop", time.time() if timed else 0.0)
                if timed:
                    await asyncio.sleep(0.005)
        finally:
            await pool.aclose()

    def enqueue_bulk(self, count: int) -> bool:
        return False  # no batch API: enqueue_job is one WATCH/MULTI transaction per job

    def worker_command(self) -> list[str]:
        return [_script("arq"), "bench.tasks_arq.WorkerSettings",
                "--custom-log-dict", "bench.tasks_arq.LOG_CONFIG"]  # fmt: skip

    def worker_env(self) -> dict[str, str]:
        return {}


class Saq:
    name = "saq"
    setting = "saq worker, concurrency 10 (its default; 50, 100 and 200 were no faster)"

    def __init__(self) -> None:
        import saq  # noqa: F401 - skip this library when it is not installed

    def clear(self) -> None:
        from bench.tasks_saq import NAME

        _flush_prefix(f"saq:{NAME}:")
        _flush_prefix(f"saq:job:{NAME}:")

    def enqueue_one_by_one(self, count: int, timed: bool = False) -> None:
        asyncio.run(self._enqueue(count, timed))  # one event loop for the whole run

    async def _enqueue(self, count: int, timed: bool) -> None:
        from saq import Queue

        from bench.tasks_saq import NAME

        # A queue of its own: a redis.asyncio client cannot outlive the event loop it ran on.
        queue = Queue.from_url(REDIS_URL, name=NAME)
        await queue.connect()
        try:
            for _ in range(count):
                await queue.enqueue("noop", sent_at=time.time() if timed else 0.0)
                if timed:
                    await asyncio.sleep(0.005)
        finally:
            await queue.disconnect()

    def enqueue_bulk(self, count: int) -> bool:
        return False  # no batch API: map() enqueues one script call per job and awaits results

    def worker_command(self) -> list[str]:
        return [_script("saq"), "bench.tasks_saq.settings"]

    def worker_env(self) -> dict[str, str]:
        return {}


class Celery:
    name = "celery"
    setting = (
        "celery worker -P solo (tasks run in the consumer: no pool IPC; threads -c 8 and prefork "
        "-c 1 were slower), results off, --without-gossip --without-mingle --without-heartbeat"
    )

    def __init__(self) -> None:
        import celery  # noqa: F401 - skip this library when it is not installed

    def clear(self) -> None:
        _flush_prefix("bench-celery:")

    def enqueue_one_by_one(self, count: int, timed: bool = False) -> None:
        from bench.tasks_celery import noop

        for _ in range(count):
            noop.delay(time.time() if timed else 0.0)
            if timed:
                time.sleep(0.005)

    def enqueue_bulk(self, count: int) -> bool:
        return False  # group().apply_async() publishes one message (one LPUSH) at a time

    def worker_command(self) -> list[str]:
        return [_script("celery"), "-A", "bench.tasks_celery", "worker", "-P", "solo",
                "-Q", "bench", "--without-gossip", "--without-mingle",
                "--without-heartbeat"]  # fmt: skip

    def worker_env(self) -> dict[str, str]:
        return {}


class Taskiq:
    name = "taskiq"
    setting = (
        "taskiq worker --workers 1 (a supervisor and one worker child) --max-async-tasks 100 "
        "(its default; 10 and 500 were no faster), ListQueueBroker, per-task log line off"
    )

    def __init__(self) -> None:
        import taskiq_redis  # noqa: F401 - skip this library when it is not installed

    def clear(self) -> None:
        _flush_prefix("bench-taskiq")

    def enqueue_one_by_one(self, count: int, timed: bool = False) -> None:
        asyncio.run(self._enqueue(count, timed))  # one event loop for the whole run

    async def _enqueue(self, count: int, timed: bool) -> None:
        from bench.tasks_taskiq import broker, noop

        await broker.startup()
        try:
            for _ in range(count):
                await noop.kiq(time.time() if timed else 0.0)
                if timed:
                    await asyncio.sleep(0.005)
        finally:
            await broker.shutdown()  # closes the pool's connections with this loop

    def enqueue_bulk(self, count: int) -> bool:
        return False  # no batch API: kiq() is one LPUSH per task

    def worker_command(self) -> list[str]:
        return [_script("taskiq"), "worker", "bench.tasks_taskiq:broker", "--workers", "1",
                "--max-async-tasks", "100", "--log-level", "WARNING"]  # fmt: skip

    def worker_env(self) -> dict[str, str]:
        return {}


BENCH_POSTGRES = os.environ.get(
    "BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/runequeue_bench"
)


def _database_drivers() -> list[Library]:
    """runequeue's database driver on a fresh SQLite file and, when reachable, PostgreSQL."""
    sqlite = f"sqlite:///{tempfile.mkdtemp()}/bench.sqlite3"
    drivers: list[Library] = [RuneQueue("database", sqlite)]
    try:
        _create_database(BENCH_POSTGRES)
        drivers.append(RuneQueue("database", BENCH_POSTGRES))
    except Exception as exc:  # no PostgreSQL here: measure the rest
        print(f"skipping runequeue on PostgreSQL: {exc}")
    return drivers


def _create_database(url: str) -> None:
    import sqlalchemy as sa

    from runequeue.db_engine import create_engine

    target = sa.engine.make_url(url)
    admin = create_engine(target.set(database="postgres").render_as_string(hide_password=False))
    with admin.execution_options(isolation_level="AUTOCOMMIT").connect() as conn:
        exists = conn.execute(
            sa.text("SELECT 1 FROM pg_database WHERE datname = :name"), {"name": target.database}
        ).scalar()
        if not exists:
            conn.execute(sa.text(f'CREATE DATABASE "{target.database}"'))
    admin.dispose()


def available() -> list[Library]:
    """runequeue (Redis, then its database driver), and each peer that is installed."""
    libraries: list[Library] = [
        RuneQueue(),
        RuneQueue(metrics=True),
        RuneQueue(publish=False),
        *_database_drivers(),
    ]
    for make in (RQ, Huey, Dramatiq, Arq, Saq, Celery, Taskiq):
        try:
            libraries.append(make())
        except ImportError:
            continue
    return libraries
