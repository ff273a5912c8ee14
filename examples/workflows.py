"""A tour of runequeue's workflows on the embedded default (SQLite, no server): a chain, a batch,
a unique job, job middleware and events, worked by a worker in this process.

Run it from the project directory:  .venv/bin/python examples/workflows.py
"""

from __future__ import annotations

import asyncio
import dataclasses
import tempfile
from pathlib import Path

from runequeue import Bus, Job, JobProcessed, Queue, QueueConfig
from runequeue.middleware import Middleware, RateLimited
from runequeue.schema import migrate
from runequeue.worker import WorkerOptions, run_worker


@dataclasses.dataclass
class Step(Job, name="tour.Step"):
    name: str

    async def handle(self) -> None:
        print(f"  chain step {self.name}")


@dataclasses.dataclass
class ImportPart(Job, name="tour.ImportPart"):
    part: int

    async def handle(self) -> None:
        if self.batch is not None and await self.batch.cancelled_async():
            return


@dataclasses.dataclass
class ImportDone(Job, name="tour.ImportDone"):
    async def handle(self) -> None:
        assert self.batch is not None
        batch = await self.batch.fresh_async()
        print(f"  batch {batch.name!r}: {batch.processed_jobs}/{batch.total_jobs} jobs, "
              f"{batch.progress}% -> then ran")  # fmt: skip


@dataclasses.dataclass
class RebuildIndex(Job, name="tour.RebuildIndex"):
    account_id: int
    unique_for = 60  # while one is queued or running, another dispatch stores nothing

    async def handle(self) -> None:
        print(f"  rebuilt the index of account {self.account_id}")


@dataclasses.dataclass
class CallApi(Job, name="tour.CallApi"):
    n: int

    def middleware(self) -> list[Middleware]:
        return [RateLimited("tour-api", max_jobs=2, per_seconds=1)]  # two a second, all workers

    async def handle(self) -> None:
        print(f"  API call {self.n}")


async def work(config: QueueConfig) -> None:
    """Work the queue until it is empty, delayed jobs (released by the rate limit) included."""
    options = WorkerOptions(stop_when_empty=True, sleep_s=0.1, sweep_interval_s=0.2)
    while Queue.size(config):
        await run_worker(config, options)
        await asyncio.sleep(0.2)


def main() -> None:
    url = f"sqlite:///{Path(tempfile.mkdtemp()) / 'tour.sqlite3'}"
    migrate(url)  # what `rune migrate` does
    config = QueueConfig(driver="database", database_url=url)
    processed: list[str] = []
    Queue.on(JobProcessed, lambda event: processed.append(event.job.job_id))

    print("a chain: each step once the one before it has succeeded")
    Bus.chain([Step("fetch"), Step("render"), Step("mail")]).dispatch(config)
    asyncio.run(work(config))

    print("a batch of 20, and a callback once all succeeded")
    batch = Bus.batch([ImportPart(n) for n in range(20)]).name("import").then(ImportDone())
    dispatched = batch.dispatch(config)
    asyncio.run(work(config))
    found = Bus.find_batch(config, dispatched.id)
    assert found is not None and found.finished()

    print("a unique job dispatched three times")
    ids = {Queue.dispatch(config, RebuildIndex(account_id=7)) for _ in range(3)}
    print(f"  {len(ids)} job stored")
    asyncio.run(work(config))

    print("five API calls, rate-limited to two a second")
    Queue.dispatch_many(config, [CallApi(n) for n in range(5)])
    asyncio.run(work(config))

    print(f"events: heard {len(processed)} jobs processed")


if __name__ == "__main__":
    main()
