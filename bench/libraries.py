"""One adapter per library: how to clear it, enqueue with it (one call, and in bulk where it has
a bulk API) and start its worker, each as its documentation recommends."""

from __future__ import annotations

import asyncio
import importlib
import os
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

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


def _flush_prefix(prefix: str, url: str = REDIS_URL) -> None:
    if url.startswith("redis+cluster://"):  # keys on every master: deleted one by one
        cluster = redis.RedisCluster.from_url(url.replace("redis+cluster://", "redis://"))
        for key in list(cluster.scan_iter(match=f"{prefix}*", count=1000)):
            cluster.delete(key)
        cluster.close()
        return
    client = redis.Redis.from_url(url)
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
        concurrency: int | None = 200,
        redis_url: str = REDIS_URL,
    ) -> None:
        from runequeue import QueueConfig
        from runequeue.schema import migrate
        from runequeue.worker_options import DEFAULT_CONCURRENCY

        self._failed_db = f"sqlite:///{tempfile.mkdtemp()}/failed.sqlite3"
        self.database_url = database_url or self._failed_db
        self.driver = driver
        backend = self.database_url.split(":")[0].split("+")[0]
        self.name = "runequeue" if driver == "redis" else f"runequeue-{backend}"
        self.redis_url = redis_url
        if redis_url.startswith("redis+cluster://"):
            self.name += "-cluster"
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
        self.concurrency = concurrency  # None: the worker's default
        if concurrency is None:
            self.name += "-default-concurrency"
        self.setting = (
            f"1 process, --concurrency {concurrency or f'{DEFAULT_CONCURRENCY} (the default)'}, "
            "uvloop (the [uvloop] "
            "extra, picked by --loop auto); its line per job on (written, like every library's "
            "output, to /dev/null)"
        )
        migrate(self.database_url)
        self.config = QueueConfig(
            driver=driver, redis_url=redis_url, redis_prefix="bench-rq", queue_name="bench",
            database_url=self.database_url,
        )  # fmt: skip

    def clear(self) -> None:
        from runequeue import Queue

        if self.driver == "redis":
            _flush_prefix("bench-rq:", self.redis_url)
            return
        Queue.clear(self.config)
        if self.database_url.startswith("postgresql"):
            # Autovacuum is off on this machine's PostgreSQL: vacuum as it would between runs,
            # or every run scans the index entries of all the jobs done before it. The peers'
            # clear() truncate their tables, which leaves nothing to vacuum.
            _vacuum(self.database_url, "jobs")

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
        command += ["--concurrency", str(self.concurrency)] if self.concurrency else []
        return [*command, "--import", "bench.tasks_runequeue"]

    def worker_env(self) -> dict[str, str]:
        return {
            "QUEUE_DRIVER": self.driver, "REDIS_URL": self.redis_url,
            "QUEUE_REDIS_PREFIX": "bench-rq",
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
    tasks = "bench.tasks_huey"  # the module holding its `huey` instance and its `noop` task

    def __init__(self) -> None:
        import huey  # noqa: F401 - skip this library when it is not installed

    def _tasks(self) -> Any:
        return importlib.import_module(self.tasks)

    def clear(self) -> None:
        _flush_prefix("huey.")

    def enqueue_one_by_one(self, count: int, timed: bool = False) -> None:
        noop = self._tasks().noop
        for _ in range(count):
            noop(time.time() if timed else 0.0)
            if timed:
                time.sleep(0.005)

    def enqueue_bulk(self, count: int) -> bool:
        return False  # no batch API

    def worker_command(self) -> list[str]:
        return [_script("huey_consumer"), f"{self.tasks}.huey", "-k", "thread", "-w", "8",
                "-d", "0.001", "-m", "0.05", "-q"]  # fmt: skip

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


BENCH_REDIS_CLUSTER = os.environ.get("BENCH_REDIS_CLUSTER_URL", "")
BENCH_MYSQL = os.environ.get("BENCH_MYSQL_URL", "mysql://root@127.0.0.1:3306/runequeue_bench")


def _database_drivers() -> list[Library]:
    """runequeue's database driver on a fresh SQLite file and, when reachable, PostgreSQL and
    MySQL."""
    sqlite = f"sqlite:///{tempfile.mkdtemp()}/bench.sqlite3"
    drivers: list[Library] = [RuneQueue("database", sqlite)]
    for url in (BENCH_POSTGRES, BENCH_MYSQL):
        try:
            _create_database(url)
            drivers.append(RuneQueue("database", url))
            if url == BENCH_POSTGRES:  # the default, measured against the peers too
                drivers.append(RuneQueue("database", url, concurrency=None))
        except Exception as exc:  # no such server here: measure the rest
            print(f"skipping runequeue on {url.split(':')[0]}: {exc}")
    return drivers


def _vacuum(url: str, table: str) -> None:
    import sqlalchemy as sa

    from runequeue.db_engine import create_engine

    engine = create_engine(url)
    with engine.execution_options(isolation_level="AUTOCOMMIT").connect() as conn:
        conn.execute(sa.text(f"VACUUM ANALYZE {table}"))
    engine.dispose()


def _create_database(url: str) -> None:
    import sqlalchemy as sa

    from runequeue.db_engine import create_engine

    target = sa.engine.make_url(url)
    if target.get_backend_name() == "mysql":
        admin = create_engine(target.set(database="mysql").render_as_string(hide_password=False))
        with admin.begin() as conn:
            conn.execute(sa.text(f"CREATE DATABASE IF NOT EXISTS `{target.database}`"))
        admin.dispose()
        return
    admin = create_engine(target.set(database="postgres").render_as_string(hide_password=False))
    with admin.execution_options(isolation_level="AUTOCOMMIT").connect() as conn:
        exists = conn.execute(
            sa.text("SELECT 1 FROM pg_database WHERE datname = :name"), {"name": target.database}
        ).scalar()
        if not exists:
            conn.execute(sa.text(f'CREATE DATABASE "{target.database}"'))
    admin.dispose()


class HueySqlite(Huey):
    name = "huey-sqlite"
    setting = (
        "SqliteHuey on a fresh temp file (its defaults: WAL, one connection per process), "
        "huey_consumer -k thread -w 8, polling delay 1-50 ms (as huey on Redis)"
    )
    tasks = "bench.tasks_huey_sqlite"

    def __init__(self) -> None:
        super().__init__()
        # The tasks module opens the file named here, in this process and (via worker_env) in
        # the consumer's: set it before the first import.
        if "BENCH_HUEY_SQLITE_PATH" not in os.environ:
            os.environ["BENCH_HUEY_SQLITE_PATH"] = f"{tempfile.mkdtemp()}/huey.sqlite3"
        self.path = str(self._tasks().PATH)

    def clear(self) -> None:
        self._tasks().huey.flush()  # deletes its task, schedule, kv and counter rows

    def worker_env(self) -> dict[str, str]:
        return {"BENCH_HUEY_SQLITE_PATH": self.path}


BENCH_PGQUEUER = os.environ.get(
    "BENCH_PGQUEUER_URL", "postgresql://postgres@127.0.0.1:5432/bench_pgqueuer"
)


class PgQueuer:
    """PgQueuer on PostgreSQL (its own database), through asyncpg, its default driver."""

    def __init__(
        self, name: str = "pgqueuer", *, batch_size: int = 10,
        max_concurrent_tasks: int | None = None, concurrency_limit: int = 0, why: str = "",
    ) -> None:  # fmt: skip
        import asyncpg  # noqa: F401 - skip this library when it is not installed
        import pgqueuer  # noqa: F401

        self.name = name
        self.batch_size = batch_size
        self.max_concurrent_tasks = max_concurrent_tasks
        self.concurrency_limit = concurrency_limit
        self.setting = (
            f"python -m bench.run_pgqueuer (pgqueuer.run, its programmatic `pgq run`: the CLI "
            f"fails at start in 1.6.0), --batch-size {batch_size}, --max-concurrent-tasks "
            f"{max_concurrent_tasks or 'unset (unlimited)'}, entrypoint concurrency_limit "
            f"{concurrency_limit or '0 (unlimited)'}, uvloop, asyncpg"
        ) + (f"; {why}" if why else "")
        _create_database(BENCH_PGQUEUER)
        asyncio.run(self._install())

    @staticmethod
    async def _queries(run: Callable[[Any], Awaitable[None]]) -> None:
        import asyncpg
        from pgqueuer import Queries

        connection = await asyncpg.connect(BENCH_PGQUEUER)
        try:
            await run(Queries.from_asyncpg_connection(connection))
        finally:
            await connection.close()

    async def _install(self) -> None:
        async def install(queries: Any) -> None:  # as `pgq install`, once
            if not await queries.schema_is_installed():
                await queries.install()

        await self._queries(install)

    def clear(self) -> None:
        async def clear(queries: Any) -> None:  # TRUNCATE of the queue, its log, its statistics
            await queries.clear_queue()
            await queries.clear_queue_log()
            await queries.clear_statistics_log()

        asyncio.run(self._queries(clear))

    def enqueue_one_by_one(self, count: int, timed: bool = False) -> None:
        from bench.tasks_pgqueuer import ENTRYPOINT

        async def enqueue(queries: Any) -> None:  # one connection for the whole run
            for _ in range(count):
                await queries.enqueue(ENTRYPOINT, repr(time.time()).encode() if timed else None)
                if timed:
                    await asyncio.sleep(0.005)

        asyncio.run(self._queries(enqueue))

    def enqueue_bulk(self, count: int) -> bool:
        from bench.tasks_pgqueuer import ENTRYPOINT

        async def enqueue(queries: Any) -> None:  # lists: one INSERT ... SELECT FROM unnest
            await queries.enqueue([ENTRYPOINT] * count, [None] * count, [0] * count)

        asyncio.run(self._queries(enqueue))
        return True

    def worker_command(self) -> list[str]:
        command = [sys.executable, "-m", "bench.run_pgqueuer", "--batch-size", str(self.batch_size)]
        if self.max_concurrent_tasks:
            command += ["--max-concurrent-tasks", str(self.max_concurrent_tasks)]
        return command

    def worker_env(self) -> dict[str, str]:
        return {
            "BENCH_PGQUEUER_URL": BENCH_PGQUEUER,
            "BENCH_PGQUEUER_CONCURRENCY_LIMIT": str(self.concurrency_limit),
        }


class Procrastinate:
    """Procrastinate on PostgreSQL (its own database), its CLI worker, psycopg 3."""

    def __init__(
        self, name: str = "procrastinate", options: tuple[str, ...] = (), why: str = ""
    ) -> None:
        import procrastinate  # noqa: F401 - skip this library when it is not installed

        from bench.tasks_procrastinate import DSN, app

        self.name = name
        self.options = options
        flags = " ".join(options) or "(its defaults: --concurrency 1, LISTEN/NOTIFY, 5 s poll)"
        self.setting = (
            f"procrastinate worker {flags}, an async task; the jobs table analyzed as "
            f"autovacuum would (see _analyze)"
        ) + (f"; {why}" if why else "")
        _create_database(DSN)
        app.open()  # the sync connector defer() uses, for this process's lifetime
        if not self._sql("SELECT to_regclass('procrastinate_jobs') IS NOT NULL"):
            app.schema_manager.apply_schema()  # as `procrastinate schema --apply`, once
        self._analyze()

    @staticmethod
    def _sql(query: str) -> Any:
        import psycopg

        from bench.tasks_procrastinate import DSN

        with psycopg.connect(DSN, autocommit=True) as connection:
            cursor = connection.execute(query)
            return cursor.fetchone()[0] if cursor.description else None

    def _analyze(self) -> None:
        """Give the planner statistics of a table that holds queued jobs, once.

        Autovacuum is off on the bench's PostgreSQL, and with no statistics (or those of an
        empty table) procrastinate_fetch_job plans a bitmap scan and sorts every queued job on
        each fetch: about 45 jobs/s with 20,000 queued, not procrastinate's speed. Autoanalyze
        would have run on any real server. TRUNCATE keeps these column statistics and clears the
        row count, which the planner then takes from the table's size: every run gets the index
        scan.
        """
        from bench.tasks_procrastinate import noop

        self.clear()
        noop.batch_defer(*[{"sent_at": 0.0}] * 1000)
        self._sql("ANALYZE procrastinate_jobs")
        self.clear()

    def clear(self) -> None:
        self._sql(
            "TRUNCATE procrastinate_jobs, procrastinate_events, procrastinate_periodic_defers, "
            "procrastinate_workers"  # the workers' rows go too: clear() runs with none running
        )

    def enqueue_one_by_one(self, count: int, timed: bool = False) -> None:
        from bench.tasks_procrastinate import noop

        for _ in range(count):
            noop.defer(sent_at=time.time() if timed else 0.0)
            if timed:
                time.sleep(0.005)

    def enqueue_bulk(self, count: int) -> bool:
        from bench.tasks_procrastinate import noop

        if not hasattr(noop, "batch_defer"):  # added in procrastinate 3.2
            return False
        noop.batch_defer(*[{"sent_at": 0.0}] * count)  # one INSERT of every job
        return True

    def worker_command(self) -> list[str]:
        return [_script("procrastinate"), "--app=bench.tasks_procrastinate.app",
                "--log-level", "warning", "worker", "--queues", "bench",
                *self.options]  # fmt: skip

    def worker_env(self) -> dict[str, str]:
        from bench.tasks_procrastinate import DSN

        return {"BENCH_PROCRASTINATE_URL": DSN}


def _postgres_peers() -> list[Library]:
    """The peers that run on PostgreSQL: skipped, like the rest, when not installed, and when
    PostgreSQL is not reachable."""
    makers: list[Callable[[], Library]] = [
        PgQueuer,
        lambda: PgQueuer(
            "pgqueuer-best",
            batch_size=100,
            why="1 process, short runs on a busy machine: batch 10 2,700-4,100 jobs/s, 100 "
            "8,500-11,500, 200 12,000 (no faster within the noise); --max-concurrent-tasks 400 "
            "with batch 100 10,700 (its worker-budget query costs a little); a per-entrypoint "
            "concurrency_limit only caps",
        ),
        Procrastinate,
        lambda: Procrastinate(
            "procrastinate-best",
            ("--concurrency", "10"),
            why="1 process, short runs on a busy machine: --concurrency 1 (its default) 130-280 "
            "jobs/s, 10 370-500, 50 500: each job is a fetch and a finish, each one commit",
        ),
    ]
    peers: list[Library] = []
    for make in makers:
        try:
            peers.append(make())
        except ImportError:
            continue
        except Exception as exc:  # no PostgreSQL here: measure the rest
            print(f"skipping a PostgreSQL peer: {exc}")
    return peers


def available() -> list[Library]:
    """runequeue (Redis, then its database driver), and each peer that is installed."""
    libraries: list[Library] = [
        RuneQueue(),
        RuneQueue(metrics=True),
        RuneQueue(publish=False),
        # On a Redis Cluster the bench does not start itself (BENCH_REDIS_CLUSTER_URL, e.g.
        # redis+cluster://127.0.0.1:7000): one worker on one queue, against `runequeue` above.
        *([RuneQueue(redis_url=BENCH_REDIS_CLUSTER)] if BENCH_REDIS_CLUSTER else []),
        *_database_drivers(),
    ]
    for make in (RQ, Huey, HueySqlite, Dramatiq, Arq, Saq, Celery, Taskiq):
        try:
            libraries.append(make())
        except ImportError:
            continue
    return [*libraries, *_postgres_peers()]
