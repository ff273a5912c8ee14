"""`rune demo`: a few example jobs, one of which fails, dispatched and processed end to end.

The job names carry a ``demo.`` prefix so they never collide with an application's own
``SendWelcomeEmail``.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable

from runequeue.config import QueueConfig
from runequeue.job import Job
from runequeue.queue import Queue
from runequeue.worker import WorkerOptions, run_worker


class PaymentDeclined(Exception):
    """The (pretend) card was declined."""


@dataclasses.dataclass
class SendWelcomeEmail(Job, name="demo.SendWelcomeEmail"):
    user_id: int

    async def handle(self) -> None:
        await asyncio.sleep(0.01)  # pretend to talk to a mail server


@dataclasses.dataclass
class ResizeImage(Job, name="demo.ResizeImage"):
    path: str
    width: int

    def handle(self) -> None:  # a plain def: runs in a worker thread
        sum(range(10_000))  # pretend to crunch pixels


@dataclasses.dataclass
class ChargeCard(Job, name="demo.ChargeCard"):
    order_id: int
    amount_cents: int
    tries = 2

    async def handle(self) -> None:
        raise PaymentDeclined(f"card declined for order {self.order_id}")


def example_jobs() -> list[Job]:
    return [
        SendWelcomeEmail(user_id=1),
        SendWelcomeEmail(user_id=2),
        ResizeImage(path="avatars/1.png", width=128),
        ChargeCard(order_id=42, amount_cents=1999),
    ]


Report = Callable[[str, str, str], None]


def run_sync_demo(config: QueueConfig, report: Report) -> int:
    """Dispatch on the sync driver: each job runs inside dispatch. Returns how many failed."""
    failures = 0
    for job in example_jobs():
        try:
            job_id = Queue.dispatch(config, job)
        except Exception as exc:
            failures += 1
            report(type(job).job_name, "-", f"FAILED: {type(exc).__name__}: {exc}")
        else:
            report(type(job).job_name, job_id, "done")
    return failures


DEMO_QUEUE = "demo"


def dispatch_examples(config: QueueConfig, report: Report) -> None:
    """Dispatch the example jobs to the ``demo`` queue of a real backend, all in one round trip."""
    jobs = example_jobs()
    ids = Queue.dispatch_many(config, jobs, queue=DEMO_QUEUE)
    for job, job_id in zip(jobs, ids, strict=True):
        report(type(job).job_name, job_id, "dispatched")


def work_examples(config: QueueConfig) -> None:
    """Work the ``demo`` queue until it is empty."""
    # The options of the command `rune demo` prints as its equivalent: the defaults.
    options = WorkerOptions(queues=(DEMO_QUEUE,), stop_when_empty=True)
    asyncio.run(run_worker(config, options))
