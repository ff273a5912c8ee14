"""`Queue.fake()`: every dispatch in this process recorded instead of sent, for tests.

While a fake is on, `Queue.dispatch` (and its async, bulk, chain and batch forms) still validates
and encodes each job exactly as it would (a job that could not be stored fails in the test too),
then hands it to the fake instead of the backend the configuration names: it is decoded back into
a job to assert on, and kept in a `MemoryStore` of the fake's own, from which `QueueFake.run_all`
runs it through a real `Worker` (middleware, retries, the failed hook, chains, batches). Nothing
touches the network. ``Queue.fake(only=[SendEmail])`` fakes those classes and sends the rest.

The fake is process-wide, like the dispatch it replaces: a job dispatched from another thread
while it is on is recorded too (recording takes a lock).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import tempfile
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

from runequeue import payload
from runequeue.batch_state import BatchRecord
from runequeue.config import QueueConfig
from runequeue.drivers.base import BatchStore, Outgoing, Producer
from runequeue.drivers.memory import MemoryDriver, MemoryProducer
from runequeue.drivers.memory_batches import MemoryBatchStore
from runequeue.drivers.memory_store import MemoryStore
from runequeue.job import Job

J = TypeVar("J", bound=Job)
MAX_RUN_ROUNDS = 1000  # run_all gives up on jobs that keep putting themselves back


@dataclasses.dataclass(frozen=True)
class Dispatched:
    """One job as the fake received it."""

    job: Job  # decoded from what would have been stored
    queue: str
    delay_s: float
    connection: str  # the driver its configuration named
    chain: tuple[Job, ...] = ()  # the steps after it, if it starts a chain
    batch_id: str | None = None


@dataclasses.dataclass(frozen=True)
class DispatchedBatch:
    """A batch as the fake received it."""

    id: str
    name: str
    queue: str
    jobs: tuple[Job, ...]
    allow_failures: bool


class QueueFake:
    """What was dispatched while the fake was on, and assertions about it."""

    def __init__(self, only: Iterable[type[Job]] | None = None) -> None:
        self.only = None if only is None else frozenset(_name_of(cls) for cls in only)
        self.store = MemoryStore()
        self.dispatched: list[Dispatched] = []
        self.batches: list[DispatchedBatch] = []
        self._lock = threading.Lock()
        self._codecs: dict[str, payload.Codec] = {}
        self._failed_dir: tempfile.TemporaryDirectory[str] | None = None
        self._failed_after: list[tuple[str, str]] | None = None

    # Turning it on and off.

    def __enter__(self) -> QueueFake:
        from runequeue import queue

        if queue.faking() is not None:
            raise RuntimeError("Queue.fake() is already on: one fake at a time")
        queue.set_fake(self)
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        from runequeue import queue

        queue.set_fake(None)
        if self._failed_dir is not None:
            self._failed_after = self._read_failed()  # still readable once the fake is off
            self._failed_dir.cleanup()

    # What dispatch calls (through `runequeue.queue`).

    def fakes(self, item: Outgoing) -> bool:
        return self.only is None or payload.peek_name(item.raw) in self.only

    def producer(self, config: QueueConfig, real: Callable[[], Producer]) -> Producer:
        return _FakeProducer(self, config, real)

    def record(self, config: QueueConfig, items: Sequence[Outgoing]) -> list[Dispatched]:
        recorded = [self._decoded(config, item) for item in items]
        with self._lock:
            self.dispatched.extend(recorded)
            self._codecs.setdefault(config.driver, config.codec)
        return recorded

    def record_batch(self, batch: DispatchedBatch) -> None:
        with self._lock:
            self.batches.append(batch)

    def _decoded(self, config: QueueConfig, item: Outgoing) -> Dispatched:
        envelope = config.codec.decode(item.raw)
        job = payload.build_job(envelope, attempt=0)
        chain: tuple[Job, ...] = ()
        if isinstance(envelope.chain, payload.ChainRest):
            chain = tuple(_step_job(step) for step in envelope.chain.next)
        batch = envelope.batch if isinstance(envelope.batch, payload.BatchRef) else None
        return Dispatched(job, item.queue, item.delay_s, config.driver, chain,
                          batch.id if batch is not None and batch.counted else None)  # fmt: skip

    # Reading what was dispatched.

    def jobs(self, cls: type[J], where: Callable[[J], bool] | None = None) -> list[J]:
        """The jobs of class ``cls`` dispatched so far (that ``where`` accepts), in order."""
        with self._lock:
            found = [d.job for d in self.dispatched if type(d.job) is cls]
        return [job for job in found if isinstance(job, cls) and (where is None or where(job))]

    def assert_dispatched(self, cls: type[J], where: Callable[[J], bool] | None = None) -> None:
        if not self.jobs(cls, where):
            raise AssertionError(f"expected {_describe(cls, where)} to be dispatched; "
                                 f"{self._summary()}")  # fmt: skip

    def assert_dispatched_times(self, cls: type[Job], times: int) -> None:
        found = len(self.jobs(cls))
        if found != times:
            raise AssertionError(f"expected {_name_of(cls)} dispatched {times} time(s), not "
                                 f"{found}; {self._summary()}")  # fmt: skip

    def assert_not_dispatched(self, cls: type[J], where: Callable[[J], bool] | None = None) -> None:
        found = self.jobs(cls, where)
        if found:
            matching = " matching the condition" if where is not None else ""
            raise AssertionError(f"expected no {_name_of(cls)}{matching} to be dispatched, "
                                 f"but {len(found)} was; {self._summary()}")  # fmt: skip

    def assert_nothing_dispatched(self) -> None:
        if self.dispatched:
            raise AssertionError(f"expected nothing dispatched; {self._summary()}")

    def assert_dispatched_on(self, queue: str, cls: type[J],
                             where: Callable[[J], bool] | None = None) -> None:  # fmt: skip
        wanted = self.jobs(cls, where)
        with self._lock:
            on_queue = [d for d in self.dispatched if d.job in wanted and d.queue == queue]
        if not on_queue:
            raise AssertionError(f"expected {_describe(cls, where)} dispatched on queue "
                                 f"{queue!r}; {self._summary()}")  # fmt: skip

    def assert_dispatched_with_delay(self, cls: type[Job], delay_s: float | None = None) -> None:
        """A ``cls`` was dispatched with a delay (of ``delay_s`` seconds, within a second)."""
        with self._lock:
            delays = [d.delay_s for d in self.dispatched if type(d.job) is cls]
        if not any(d > 0 and (delay_s is None or abs(d - delay_s) <= 1) for d in delays):
            wanted = "a delay" if delay_s is None else f"a delay of {delay_s:g} s"
            shown = ", ".join(f"{d:g} s" for d in delays) or "none dispatched"
            raise AssertionError(f"expected {_name_of(cls)} dispatched with {wanted}; its "
                                 f"delays: {shown}")  # fmt: skip

    def assert_chained(self, steps: Sequence[type[Job] | Job]) -> None:
        """A chain of these steps (classes, or jobs compared by equality) was dispatched."""
        with self._lock:
            chains = [(d.job, *d.chain) for d in self.dispatched if d.chain]
        if not any(_steps_match(chain, steps) for chain in chains):
            shown = "; ".join(" -> ".join(_name_of(type(j)) for j in c) for c in chains)
            raise AssertionError(f"expected the chain {' -> '.join(_step_name(s) for s in steps)}"
                                 f"; chains dispatched: {shown or 'none'}")  # fmt: skip

    def assert_batched(self, where: Callable[[DispatchedBatch], bool] | None = None) -> None:
        """A batch (that ``where`` accepts) was dispatched."""
        with self._lock:
            batches = list(self.batches)
        if not any(where is None or where(batch) for batch in batches):
            shown = "; ".join(f"{b.name or b.id[:8]}: {len(b.jobs)} job(s)" for b in batches)
            raise AssertionError(f"expected a matching batch; batches dispatched: "
                                 f"{shown or 'none'}")  # fmt: skip

    def _summary(self) -> str:
        with self._lock:
            seen = [(_name_of(type(d.job)), d.queue) for d in self.dispatched]
        if not seen:
            return "nothing was dispatched"
        counts: dict[tuple[str, str], int] = {}
        for key in seen:
            counts[key] = counts.get(key, 0) + 1
        listed = ", ".join(f"{n} x {name} (queue {queue})" for (name, queue), n in counts.items())
        return f"dispatched: {listed}"

    # Running what was dispatched.

    def run_all(self, *, tries: int = 3) -> None:
        """Run every job the fake holds, and those they dispatch, through a real worker:
        middleware, retries (backoffs and delays skipped forward), the failed hook, chains and
        batches. A job that fails for good is kept in `failed` (its error, not raised)."""
        asyncio.run(self.run_all_async(tries=tries))

    async def run_all_async(self, *, tries: int = 3) -> None:
        from runequeue.failed_store import FailedJobStore
        from runequeue.schema import migrate
        from runequeue.worker import Worker
        from runequeue.worker_options import WorkerOptions

        store = FailedJobStore(self._failed_url(migrate))
        codec = next(iter(self._codecs.values()), payload.Codec())
        try:
            for _ in range(MAX_RUN_ROUNDS):
                queues = self.store.queue_names()
                if not queues:
                    return
                options = WorkerOptions(queues=tuple(queues), stop_when_empty=True, tries=tries,
                                        sleep_s=0.01, sweep_interval_s=0.05, lease_s=60,
                                        publish_metrics=False)  # fmt: skip
                worker = Worker(MemoryDriver(self.store), store, options, connection="fake",
                                codec=codec)  # fmt: skip
                await worker.run()
                if not self.store.skip_to_next_due():
                    return
            raise RuntimeError(f"run_all: jobs still waiting after {MAX_RUN_ROUNDS} rounds")
        finally:
            store.close()

    @property
    def failed(self) -> list[tuple[str, str]]:
        """(job name, error) of each job that failed for good in `run_all`."""
        if self._failed_after is not None:
            return self._failed_after
        return self._read_failed()

    def _read_failed(self) -> list[tuple[str, str]]:
        if self._failed_dir is None:
            return []
        from runequeue.failed_store import FailedJobStore

        store = FailedJobStore(self._failed_url(None))
        try:
            return [(f.job_name, f.exception) for f in store.all()]
        finally:
            store.close()

    def _failed_url(self, migrate: Callable[[str], Any] | None) -> str:
        if self._failed_dir is None:
            self._failed_dir = tempfile.TemporaryDirectory(prefix="runequeue-fake-")
        url = f"sqlite:///{Path(self._failed_dir.name) / 'failed.sqlite3'}"
        if migrate is not None:
            migrate(url)
        return url


class _FakeProducer:
    """The `Producer` dispatch gets while a fake is on: faked jobs recorded and kept in the
    fake's store, the others (``only=``) sent to the real backend."""

    def __init__(self, fake: QueueFake, config: QueueConfig, real: Callable[[], Producer]):
        self.fake = fake
        self.config = config
        self._real = real
        self._memory = MemoryProducer(fake.store)

    def push(self, items: Sequence[Outgoing]) -> int:
        faked = [item for item in items if self.fake.fakes(item)]
        others = [item for item in items if not self.fake.fakes(item)]
        stored = 0
        if faked:
            self.fake.record(self.config, faked)
            stored += self._memory.push(faked)
        if others:
            stored += self._real().push(others)
        return stored

    def push_unique(self, item: Outgoing) -> str:
        if not self.fake.fakes(item):
            return self._real().push_unique(item)
        holder = self._memory.push_unique(item)
        if holder == item.job_id:
            self.fake.record(self.config, [item])
        return holder

    def batches(self) -> BatchStore:
        return _FakeBatches(self.fake, self.config, self._real)

    def size(self, queue: str) -> int:
        return self._memory.size(queue)

    def clear(self, queue: str) -> int:
        return self._memory.clear(queue)

    def close(self) -> None:
        return None


class _FakeBatches(MemoryBatchStore):
    """Batches kept in the fake's store (and recorded), unless none of their jobs is faked."""

    def __init__(self, fake: QueueFake, config: QueueConfig, real: Callable[[], Producer]):
        super().__init__(fake.store)
        self.fake = fake
        self.config = config
        self._real = real

    def create_batch(self, record: BatchRecord, jobs: Sequence[Outgoing]) -> None:
        if jobs and not any(self.fake.fakes(item) for item in jobs):
            self._real().batches().create_batch(record, jobs)
            return
        decoded = self.fake.record(self.config, jobs)  # (not another thread's, as a slice was)
        self.fake.record_batch(DispatchedBatch(record.id, record.name, record.queue,
                                               tuple(d.job for d in decoded),
                                               record.allow_failures))  # fmt: skip
        super().create_batch(record, jobs)


def _step_job(step: payload.Step) -> Job:
    envelope = payload.Envelope(id=step.id, job=step.job, data=step.data, queue=step.queue,
                                created_at=0.0)  # fmt: skip
    return payload.build_job(envelope, attempt=0)


def _steps_match(chain: Sequence[Job], steps: Sequence[type[Job] | Job]) -> bool:
    if len(chain) != len(steps):
        return False
    return all(type(job) is step if isinstance(step, type) else job == step
               for job, step in zip(chain, steps, strict=True))  # fmt: skip


def _step_name(step: type[Job] | Job) -> str:
    return _name_of(step if isinstance(step, type) else type(step))


def _name_of(cls: type[Job]) -> str:
    return cls.job_name


def _describe(cls: type[Job], where: Callable[..., bool] | None) -> str:
    return f"a {_name_of(cls)}" + (" matching the condition" if where is not None else "")


@contextlib.contextmanager
def faking(only: Iterable[type[Job]] | None = None) -> Iterator[QueueFake]:
    with QueueFake(only) as fake:
        yield fake
