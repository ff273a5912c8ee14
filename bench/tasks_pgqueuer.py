import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg
from pgqueuer import Job, PgQueuer

from bench.completion import completion

DSN = os.environ.get("BENCH_PGQUEUER_URL", "postgresql://postgres@127.0.0.1:5432/bench_pgqueuer")
ENTRYPOINT = "noop"
# The entrypoint's concurrency_limit: 0 (its default) is unlimited; the adapter passes others.
CONCURRENCY_LIMIT = int(os.environ.get("BENCH_PGQUEUER_CONCURRENCY_LIMIT", "0"))


@asynccontextmanager
async def create_pgqueuer() -> AsyncIterator[PgQueuer]:
    """The factory ``pgq run`` calls: one asyncpg connection (its default driver)."""
    connection = await asyncpg.connect(DSN)
    try:
        pgq = PgQueuer.from_asyncpg_connection(connection)

        @pgq.entrypoint(ENTRYPOINT, concurrency_limit=CONCURRENCY_LIMIT)
        async def noop(job: Job) -> None:
            completion.bump(float(job.payload) if job.payload else 0.0)

        yield pgq
    finally:
        await connection.close()
