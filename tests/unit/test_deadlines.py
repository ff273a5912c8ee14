"""Job timeouts on the worker's shared `Deadlines`: a job past its deadline fails with JobTimeout,
a handler's own TimeoutError stays its own, and any other cancellation still cancels."""

from __future__ import annotations

import asyncio
import dataclasses
import threading

import pytest

from runequeue import Job
from runequeue.deadlines import Deadlines
from runequeue.errors import JobTimeout
from runequeue.payload import Codec, envelope_for
from runequeue.runner import JobDefaults, run_attempt


@dataclasses.dataclass
class Naps(Job, name="tests.deadlines.Naps"):
    seconds: float

    async def handle(self) -> None:
        await asyncio.sleep(self.seconds)


@dataclasses.dataclass
class NapsInThread(Job, name="tests.deadlines.NapsInThread"):
    seconds: float

    def handle(self) -> None:
        threading.Event().wait(self.seconds)


@dataclasses.dataclass
class OwnTimeout(Job, name="tests.deadlines.OwnTimeout"):
    async def handle(self) -> None:
        raise TimeoutError("the payment API did not answer")


def stored(job: Job, timeout_s: float) -> bytes:
    return Codec().encode(envelope_for(job, queue="default", timeout=timeout_s))


async def attempt(job: Job, timeout_s: float, deadlines: Deadlines) -> BaseException | None:
    result = await run_attempt(stored(job, timeout_s), 1, JobDefaults(), deadlines=deadlines)
    return result.error


def test_a_job_past_its_deadline_times_out() -> None:
    async def main() -> tuple[BaseException | None, BaseException | None]:
        deadlines = Deadlines()
        slow = await attempt(Naps(seconds=30), 0.1, deadlines)
        in_thread = await attempt(NapsInThread(seconds=0.5), 0.1, deadlines)
        await deadlines.close()
        return slow, in_thread

    slow, in_thread = asyncio.run(main())
    assert isinstance(slow, JobTimeout)
    assert isinstance(in_thread, JobTimeout)


def test_a_job_within_its_deadline_and_its_own_timeout_error_are_left_alone() -> None:
    async def main() -> tuple[BaseException | None, BaseException | None, int]:
        deadlines = Deadlines()
        quick = await attempt(Naps(seconds=0.01), 5, deadlines)
        own = await attempt(OwnTimeout(), 5, deadlines)
        task = asyncio.current_task()
        assert task is not None
        return quick, own, task.cancelling()

    quick, own, cancelling = asyncio.run(main())
    assert quick is None
    assert type(own) is TimeoutError
    assert cancelling == 0


def test_a_cancellation_that_is_not_a_timeout_still_cancels() -> None:
    async def main() -> None:
        deadlines = Deadlines()
        running = asyncio.create_task(attempt(Naps(seconds=30), 60, deadlines))
        await asyncio.sleep(0.05)
        running.cancel()  # a shutdown: the worker must see the cancellation, not a failure
        with pytest.raises(asyncio.CancelledError):
            await running
        await deadlines.close()

    asyncio.run(main())
