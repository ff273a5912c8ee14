import os

from huey import SqliteHuey

from bench.completion import completion

# The adapter makes a fresh file, sets this in its own process and passes it to the consumer.
PATH = os.environ["BENCH_HUEY_SQLITE_PATH"]

huey = SqliteHuey("bench", filename=PATH, results=False)


@huey.task()
def noop(sent_at: float = 0.0) -> None:
    completion.bump(sent_at)
