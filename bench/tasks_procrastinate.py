import os

import procrastinate

from bench.completion import completion

DSN = os.environ.get(
    "BENCH_PROCRASTINATE_URL", "postgresql://postgres@127.0.0.1:5432/bench_procrastinate"
)

app = procrastinate.App(connector=procrastinate.PsycopgConnector(conninfo=DSN))


@app.task(name="noop", queue="bench")
async def noop(sent_at: float = 0.0) -> None:
    completion.bump(sent_at)
