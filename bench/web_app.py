"""The Starlette app that ``python -m bench.web`` serves under uvicorn: one no-op job enqueued
from an async handler, per library, the way its users call it there.

``GET /noop`` answers a small JSON and dispatches nothing: the server's own cost per request.
``POST /dispatch/<library>`` enqueues one no-op job (the task of ``bench/tasks_<library>.py``)
and answers its id. ``GET /served`` answers how many of those two it has answered (wrk counts
only the answers it read, not those still in flight when it stopped). The libraries served are
those named in ``BENCH_WEB_LIBRARIES`` (comma separated; all of them by default); each opens its
connections once, at startup.

Celery and RQ have no async API: their blocking call is made directly in the async handler, as
most code does, so it holds the event loop for its round trip to Redis (not handed to a thread).
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from bench.completion import REDIS_URL

Dispatch = Callable[[], Awaitable[str]]  # enqueue one no-op job, return its id
RUNEQUEUE_PREFIX = "bench-web-rq"  # runequeue's keys here, apart from the main benchmark's


@asynccontextmanager
async def runequeue() -> AsyncIterator[Dispatch]:
    from bench.tasks_runequeue import NoOp
    from runequeue import Queue, QueueConfig

    config = QueueConfig(driver="redis", redis_url=REDIS_URL, redis_prefix=RUNEQUEUE_PREFIX,
                         queue_name="bench")  # fmt: skip

    async def dispatch() -> str:
        return await Queue.dispatch_async(config, NoOp())

    try:
        yield dispatch
    finally:
        await Queue.aclose_connections()


@asynccontextmanager
async def celery() -> AsyncIterator[Dispatch]:
    from bench.tasks_celery import noop

    async def dispatch() -> str:
        return str(noop.delay(0.0).id)  # blocking, on the event loop

    yield dispatch


@asynccontextmanager
async def rq() -> AsyncIterator[Dispatch]:
    import redis
    from rq import Queue

    from bench.tasks_rq import noop

    connection = redis.Redis.from_url(REDIS_URL)
    queue = Queue("bench", connection=connection)

    async def dispatch() -> str:
        return str(queue.enqueue(noop, 0.0).id)  # blocking, on the event loop

    try:
        yield dispatch
    finally:
        connection.close()


@asynccontextmanager
async def arq() -> AsyncIterator[Dispatch]:
    from arq import create_pool
    from arq.connections import RedisSettings

    from bench.tasks_arq import QUEUE

    pool = await create_pool(RedisSettings.from_dsn(REDIS_URL), default_queue_name=QUEUE)

    async def dispatch() -> str:
        job = await pool.enqueue_job("noop", 0.0)
        assert job is not None  # None only when a job of the same id exists
        return str(job.job_id)

    try:
        yield dispatch
    finally:
        await pool.aclose()


@asynccontextmanager
async def saq() -> AsyncIterator[Dispatch]:
    from saq import Queue

    from bench.tasks_saq import NAME

    queue = Queue.from_url(REDIS_URL, name=NAME)
    await queue.connect()

    async def dispatch() -> str:
        job = await queue.enqueue("noop", sent_at=0.0)
        assert job is not None  # None only when a job of the same key exists
        return str(job.id)

    try:
        yield dispatch
    finally:
        await queue.disconnect()


@asynccontextmanager
async def taskiq() -> AsyncIterator[Dispatch]:
    from bench.tasks_taskiq import broker, noop

    await broker.startup()

    async def dispatch() -> str:
        return str((await noop.kiq(0.0)).task_id)

    try:
        yield dispatch
    finally:
        await broker.shutdown()


LIBRARIES: dict[str, Callable[[], AbstractAsyncContextManager[Dispatch]]] = {
    "runequeue": runequeue, "celery": celery, "rq": rq, "arq": arq, "saq": saq, "taskiq": taskiq,
}  # fmt: skip


def create_app(names: list[str]) -> Starlette:
    dispatchers: dict[str, Dispatch] = {}
    served = 0

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with AsyncExitStack() as stack:
            for name in names:
                dispatchers[name] = await stack.enter_async_context(LIBRARIES[name]())
            yield

    async def noop(request: Request) -> JSONResponse:
        nonlocal served
        served += 1
        return JSONResponse({"ok": True})

    async def dispatch(request: Request) -> JSONResponse:
        nonlocal served
        name = request.path_params["library"]
        if name not in dispatchers:
            return JSONResponse({"error": f"not served: {name}"}, status_code=404)
        job_id = await dispatchers[name]()
        served += 1
        return JSONResponse({"id": job_id})

    async def count(request: Request) -> JSONResponse:
        return JSONResponse({"served": served})

    routes = [Route("/noop", noop), Route("/dispatch/{library}", dispatch, methods=["POST"]),
              Route("/served", count)]  # fmt: skip
    return Starlette(routes=routes, lifespan=lifespan)


_names = os.environ.get("BENCH_WEB_LIBRARIES")
app = create_app(_names.split(",") if _names else list(LIBRARIES))
