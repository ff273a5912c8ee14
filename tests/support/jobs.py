"""Jobs the tests dispatch.

Each appends a line to a ledger file (outside the queue store), so in-process and subprocess
workers alike leave a record the test can read: ``event job_id attempt pid time``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import os
import sys
import time
from pathlib import Path

from runequeue import Job
from runequeue.middleware import (
    Middleware,
    Next,
    RateLimited,
    Skip,
    ThrottlesExceptions,
    WithoutOverlapping,
)


def note(path: str, event: str, job: Job) -> None:
    with open(path, "a", encoding="utf-8") as ledger:
        ledger.write(f"{event} {job.job_id} {job.attempt} {os.getpid()} {time.time():.6f}\n")
        ledger.flush()
        os.fsync(ledger.fileno())


def read_ledger(path: Path) -> list[tuple[str, str, int, int]]:
    if not path.exists():
        return []
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        event, job_id, attempt, pid, _ = line.split()
        rows.append((event, job_id, int(attempt), int(pid)))
    return rows


@dataclasses.dataclass(frozen=True)
class Event:
    event: str
    job_id: str
    attempt: int
    pid: int
    at: float  # wall clock, seconds


def read_events(path: Path) -> list[Event]:
    """The ledger with each event's time, for the chaos suite's redelivery figures."""
    if not path.exists():
        return []
    events = []
    for line in path.read_text(encoding="utf-8").splitlines():
        event, job_id, attempt, pid, at = line.split()
        events.append(Event(event, job_id, int(attempt), int(pid), float(at)))
    return events


@dataclasses.dataclass
class Record(Job, name="tests.Record"):
    ledger: str
    tag: str = "done"

    async def handle(self) -> None:
        note(self.ledger, self.tag, self)


@dataclasses.dataclass
class RecordInThread(Job, name="tests.RecordInThread"):
    ledger: str

    def handle(self) -> None:
        note(self.ledger, "done", self)


@dataclasses.dataclass
class FlakyThenOk(Job, name="tests.FlakyThenOk"):
    ledger: str
    fail_times: int
    tries = 5

    async def handle(self) -> None:
        note(self.ledger, "start", self)
        if self.attempt <= self.fail_times:
            raise RuntimeError(f"flaky failure on attempt {self.attempt}")
        note(self.ledger, "done", self)


class Boom(Exception):
    pass


@dataclasses.dataclass
class AlwaysFails(Job, name="tests.AlwaysFails"):
    ledger: str
    tries = 2

    async def handle(self) -> None:
        note(self.ledger, "start", self)
        raise Boom("always fails")

    async def failed(self, exc: BaseException) -> None:
        note(self.ledger, f"hook:{type(exc).__name__}", self)


@dataclasses.dataclass
class HookRaises(Job, name="tests.HookRaises"):
    ledger: str
    tries = 1

    async def handle(self) -> None:
        raise Boom("fails")

    def failed(self, exc: BaseException) -> None:
        note(self.ledger, "hook", self)
        raise RuntimeError("the hook itself breaks")


@dataclasses.dataclass
class Sleepy(Job, name="tests.Sleepy"):
    """Sleeps on the event loop (async)."""

    ledger: str
    seconds: float

    async def handle(self) -> None:
        note(self.ledger, "start", self)
        await asyncio.sleep(self.seconds)
        note(self.ledger, "done", self)


@dataclasses.dataclass
class BlockingSleepy(Job, name="tests.BlockingSleepy"):
    """Blocks the event loop itself with time.sleep, to starve anything that runs on it."""

    ledger: str
    seconds: float

    async def handle(self) -> None:
        note(self.ledger, "start", self)
        time.sleep(self.seconds)
        note(self.ledger, "done", self)


@dataclasses.dataclass
class TypedUser(Job, name="tests.TypedUser"):
    user_id: int

    async def handle(self) -> None:
        return None


@dataclasses.dataclass
class FailsUntilFixed(Job, name="tests.FailsUntilFixed"):
    """Fails while the file ``fix`` does not exist: a bug fixed between failure and retry."""

    ledger: str
    fix: str
    tries = 1

    async def handle(self) -> None:
        note(self.ledger, "start", self)
        if not Path(self.fix).exists():
            raise Boom("not fixed yet")
        note(self.ledger, "done", self)


@dataclasses.dataclass
class KillsItsWorker(Job, name="tests.KillsItsWorker"):
    """A poison job: the process running it dies, every time (after `after_s`, so the jobs
    taken with it have started)."""

    ledger: str
    after_s: float = 0.0
    tries = 3

    async def handle(self) -> None:
        note(self.ledger, "start", self)
        await asyncio.sleep(self.after_s)
        os._exit(137)


@dataclasses.dataclass
class SleepThenFail(Job, name="tests.SleepThenFail"):
    ledger: str
    seconds: float
    tries = 1

    async def handle(self) -> None:
        note(self.ledger, "start", self)
        await asyncio.sleep(self.seconds)
        raise Boom("failed after a while")


@dataclasses.dataclass
class ExitsInHandle(Job, name="tests.ExitsInHandle"):
    """Calls sys.exit() inside an async handle (a script's habit brought into a job)."""

    ledger: str
    tries = 1

    async def handle(self) -> None:
        note(self.ledger, "start", self)
        sys.exit(3)


@dataclasses.dataclass
class InterruptsInThread(Job, name="tests.InterruptsInThread"):
    """Raises KeyboardInterrupt inside a plain-def handle (run in a thread)."""

    ledger: str
    tries = 1

    def handle(self) -> None:
        note(self.ledger, "start", self)
        raise KeyboardInterrupt("interrupted in a thread")


@dataclasses.dataclass
class HookExits(Job, name="tests.HookExits"):
    """Fails, and its failed() hook calls sys.exit()."""

    ledger: str
    tries = 1

    async def handle(self) -> None:
        raise Boom("fails before its hook exits")

    def failed(self, exc: BaseException) -> None:
        note(self.ledger, "hook", self)
        sys.exit(4)


@dataclasses.dataclass
class SpinsPastTimeout(Job, name="tests.SpinsPastTimeout"):
    """An async handler that never awaits: it spins the CPU for ``seconds``, past its timeout."""

    ledger: str
    seconds: float
    timeout = 0.2

    async def handle(self) -> None:
        note(self.ledger, "start", self)
        until = time.monotonic() + self.seconds
        while time.monotonic() < until:
            pass
        note(self.ledger, "done", self)


@dataclasses.dataclass
class SleepsInThreadPastTimeout(Job, name="tests.SleepsInThreadPastTimeout"):
    """A plain-def handler that sleeps far past its timeout (a hung call, say)."""

    ledger: str
    seconds: float
    timeout = 1
    tries = 1

    def handle(self) -> None:
        note(self.ledger, "start", self)
        time.sleep(self.seconds)
        note(self.ledger, "done", self)


@dataclasses.dataclass
class SlowFirstAttemptFails(Job, name="tests.SlowFirstAttemptFails"):
    """Runs ``seconds`` and fails its first attempt (noting "failing" just before); then succeeds.

    While it runs, a polling worker's idle interval grows: its retry shows whether the worker's
    own release makes it look again at once.
    """

    ledger: str
    seconds: float
    tries = 3

    async def handle(self) -> None:
        note(self.ledger, "start", self)
        if self.attempt == 1:
            await asyncio.sleep(self.seconds)
            note(self.ledger, "failing", self)
            raise RuntimeError("the first attempt fails after a while")
        note(self.ledger, "done", self)


@dataclasses.dataclass
class FailsWithNul(Job, name="tests.FailsWithNul"):
    """Fails with a NUL byte in its message, which PostgreSQL's text columns cannot store."""

    ledger: str
    tries = 1

    async def handle(self) -> None:
        note(self.ledger, "start", self)
        raise Boom("a NUL \x00 in the message")


class LookupFailed(LookupError):
    """What an ORM's "no such row" looks like to a job's constructor."""


@dataclasses.dataclass
class LooksUpOnBuild(Job, name="tests.LooksUpOnBuild"):
    """Looks something up when it is built, as a model-loading job does; ``missing`` fails it.

    Dispatch refuses ``missing`` values (its own decode raises too): the tests write them straight
    into the store, as a row deleted between dispatch and work would look.
    """

    ledger: str
    key: str
    tries = 3

    def __post_init__(self) -> None:
        if self.key == "missing":
            raise LookupFailed(f"no row {self.key!r}")
        if self.key == "exit":
            raise SystemExit(5)

    async def handle(self) -> None:
        note(self.ledger, "start", self)


class Unprintable(Exception):
    """An exception whose text cannot be had: its ``__str__`` raises."""

    def __str__(self) -> str:
        raise ValueError("__str__ of Unprintable raised")


@dataclasses.dataclass
class FailsUnprintably(Job, name="tests.FailsUnprintably"):
    """Fails with an exception that cannot be turned into text (for the log line or failed_jobs)."""

    ledger: str
    tries = 1

    async def handle(self) -> None:
        note(self.ledger, "start", self)
        raise Unprintable()


@dataclasses.dataclass
class NoopInThread(Job, name="tests.NoopInThread"):
    """Does nothing, in a thread (a plain ``def handle``): for runs too long for a ledger."""

    n: int

    def handle(self) -> None:
        return None


@dataclasses.dataclass
class FailsAtOnce(Job, name="tests.FailsAtOnce"):
    """Fails for good at its first attempt, writing nothing: a failed_jobs row per job."""

    n: int
    tries = 1

    async def handle(self) -> None:
        raise Boom(f"failure {self.n}")


@dataclasses.dataclass
class HangsInThread(Job, name="tests.HangsInThread"):
    """A plain-def handler stuck in a call far past its short timeout."""

    ledger: str
    seconds: float
    timeout = 0.3
    tries = 1

    def handle(self) -> None:
        note(self.ledger, "start", self)
        time.sleep(self.seconds)
        note(self.ledger, "done", self)


@dataclasses.dataclass
class RecordInThreadOnce(Job, name="tests.RecordInThreadOnce"):
    """Records itself from a thread after 0.2 s, under a 0.3 s timeout, with a single try: two
    of them one after the other on a thread would be past it, counted from the first's start."""

    ledger: str
    timeout = 0.3
    tries = 1

    def handle(self) -> None:
        time.sleep(0.2)
        note(self.ledger, "ran", self)


@dataclasses.dataclass
class FailsWithBlockingHook(Job, name="tests.FailsWithBlockingHook"):
    """Fails at once; its plain-def failed() hook blocks for ``seconds`` (an alert over HTTP)."""

    ledger: str
    seconds: float
    tries = 1

    async def handle(self) -> None:
        raise Boom("fails")

    def failed(self, exc: BaseException) -> None:
        note(self.ledger, "hook-start", self)
        time.sleep(self.seconds)
        note(self.ledger, "hook-end", self)


@dataclasses.dataclass
class ChainLink(Job, name="tests.ChainLink"):
    """A step of a chain: notes ``start:<tag>``, sleeps ``seconds``, notes ``done:<tag>``."""

    ledger: str
    tag: str
    seconds: float = 0.0

    async def handle(self) -> None:
        note(self.ledger, f"start:{self.tag}", self)
        await asyncio.sleep(self.seconds)
        note(self.ledger, f"done:{self.tag}", self)


@dataclasses.dataclass
class OncePerUser(Job, name="tests.OncePerUser"):
    """A unique job: one per ``user_id`` at a time, whatever its ``note``."""

    ledger: str
    user_id: int
    note_text: str = ""
    seconds: float = 0.0
    unique_for = 30

    def unique_id(self) -> str:
        return str(self.user_id)

    async def handle(self) -> None:
        note(self.ledger, f"start:{self.user_id}", self)
        await asyncio.sleep(self.seconds)
        note(self.ledger, f"done:{self.user_id}", self)


@dataclasses.dataclass
class UniqueUntilProcessing(OncePerUser, name="tests.UniqueUntilProcessing"):
    unique_until = "processing"


@dataclasses.dataclass
class UniqueFails(Job, name="tests.UniqueFails"):
    """A unique job (by all its fields) that always fails, once."""

    ledger: str
    tries = 1
    unique_for = 30

    async def handle(self) -> None:
        note(self.ledger, "start", self)
        raise Boom("fails")


@dataclasses.dataclass
class BatchMember(Job, name="tests.BatchMember"):
    """A job of a batch: notes ``start:<tag>``, sleeps ``seconds``, fails if ``fails`` (one try),
    else notes ``done:<tag>``."""

    ledger: str
    tag: str
    fails: bool = False
    seconds: float = 0.0
    tries = 1

    async def handle(self) -> None:
        note(self.ledger, f"start:{self.tag}", self)
        await asyncio.sleep(self.seconds)
        if self.fails:
            raise Boom(f"{self.tag} fails")
        note(self.ledger, f"done:{self.tag}", self)


@dataclasses.dataclass
class BatchCallback(Job, name="tests.BatchCallback"):
    """A batch's then, catch or finally job: notes ``<tag>:<batch id>`` (its batch, read)."""

    ledger: str
    tag: str

    async def handle(self) -> None:
        assert self.batch is not None
        batch = await self.batch.fresh_async()
        note(self.ledger, f"{self.tag}:{batch.id}", self)


@dataclasses.dataclass
class SeesCancelled(Job, name="tests.SeesCancelled"):
    """Notes ``cancelled:<True|False>``: whether its batch is cancelled, asked from a thread."""

    ledger: str

    def handle(self) -> None:
        assert self.batch is not None
        note(self.ledger, f"cancelled:{self.batch.cancelled()}", self)


@dataclasses.dataclass
class GrowsBatch(Job, name="tests.GrowsBatch"):
    """Adds ``count`` `BatchMember` jobs to its own batch, then notes ``grew``."""

    ledger: str
    count: int

    async def handle(self) -> None:
        assert self.batch is not None
        jobs = [BatchMember(self.ledger, f"added{i}") for i in range(self.count)]
        await self.batch.add_async(jobs)
        note(self.ledger, "grew", self)


class SturdyBatchMember(BatchMember, name="tests.SturdyBatchMember"):
    """A `BatchMember` with ten tries: one whose worker is killed runs again."""

    tries = 10


@dataclasses.dataclass
class RateLimitedCall(Job, name="tests.RateLimitedCall"):
    """At most two start per ``per_seconds`` across workers; notes ``ran``. One try: a release
    that counted its attempt would leave it none."""

    ledger: str
    key: str
    per_seconds: float = 60.0
    tries = 1

    def middleware(self) -> list[Middleware]:
        return [RateLimited(self.key, max_jobs=2, per_seconds=self.per_seconds)]

    async def handle(self) -> None:
        note(self.ledger, "ran", self)


@dataclasses.dataclass
class Exclusive(Job, name="tests.Exclusive"):
    """One at a time per key: notes ``start`` and ``done`` around ``seconds`` of work."""

    ledger: str
    seconds: float = 0.3
    tries = 1

    def middleware(self) -> list[Middleware]:
        return [WithoutOverlapping("exclusive", release_after=0.1, expire_after=30)]

    async def handle(self) -> None:
        note(self.ledger, "start", self)
        await asyncio.sleep(self.seconds)
        note(self.ledger, "done", self)


@dataclasses.dataclass
class CallsDownService(Job, name="tests.CallsDownService"):
    """Always raises; after two exceptions, `ThrottlesExceptions` holds it back instead."""

    ledger: str
    tries = 10

    def middleware(self) -> list[Middleware]:
        return [ThrottlesExceptions(max_exceptions=2, decay_seconds=60, key=self.ledger)]

    async def handle(self) -> None:
        note(self.ledger, "call", self)
        raise Boom("service down")


@dataclasses.dataclass
class MaybeSkipped(Job, name="tests.MaybeSkipped"):
    ledger: str
    skip: bool

    def middleware(self) -> list[Middleware]:
        return [Skip(when=self.skip)]

    async def handle(self) -> None:
        note(self.ledger, "ran", self)


@dataclasses.dataclass
class ReleasesItself(Job, name="tests.ReleasesItself"):
    """Puts itself back until it has run ``times`` times (one try: releases do not count)."""

    ledger: str
    times: int
    tries = 1

    def handle(self) -> None:
        note(self.ledger, "ran", self)
        if len(read_ledger(Path(self.ledger))) < self.times:
            self.release(0)


@dataclasses.dataclass
class FailsItself(Job, name="tests.FailsItself"):
    """Fails itself for good at once, with tries to spare."""

    ledger: str
    tries = 5

    async def handle(self) -> None:
        note(self.ledger, "ran", self)
        self.fail("the input is bad")

    async def failed(self, exc: BaseException) -> None:
        note(self.ledger, f"hook:{type(exc).__name__}", self)


class BrokenMiddleware:
    async def handle(self, job: Job, next: Next) -> None:
        raise RuntimeError("the middleware itself breaks")


@dataclasses.dataclass
class BehindBrokenMiddleware(Job, name="tests.BehindBrokenMiddleware"):
    ledger: str
    tries = 1

    def middleware(self) -> list[Middleware]:
        return [BrokenMiddleware()]

    async def handle(self) -> None:
        note(self.ledger, "ran", self)


@dataclasses.dataclass
class RetriedUntil(Job, name="tests.RetriedUntil"):
    """Always fails; retried (every 0.1 s) until ``seconds`` after its dispatch, not by count."""

    ledger: str
    seconds: float
    backoff = 0.1

    def retry_until(self) -> dt.datetime:
        return dt.datetime.now(dt.UTC) + dt.timedelta(seconds=self.seconds)

    async def handle(self) -> None:
        note(self.ledger, "ran", self)
        raise Boom("still failing")


@dataclasses.dataclass
class BoundedExceptions(Job, name="tests.BoundedExceptions"):
    """Always fails; ten tries, but fails for good at its second exception."""

    ledger: str
    tries = 10
    max_exceptions = 2

    async def handle(self) -> None:
        note(self.ledger, "ran", self)
        raise Boom("fails")


class SturdyChainLink(ChainLink, name="tests.SturdyChainLink"):
    """A `ChainLink` with ten tries: one whose worker is killed runs again."""

    tries = 10
