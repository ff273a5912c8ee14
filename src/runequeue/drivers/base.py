"""The contract between the worker (and `Queue`) and a storage backend.

Three small protocols every backend implements, each proved by mypy (``_: type[Driver] =
RedisDriver``) and by the shared conformance suite rather than by a base class of
``NotImplementedError``; and optional capabilities (`ReservesOnWake`, `ChecksSettings`) a driver
offers by having their methods, which the worker looks for once:

- `Producer`: the blocking side used by ``Queue.dispatch`` and the CLI (push, size, clear).
- `Driver`: the asyncio side used by the worker and ``Queue.dispatch_async``.
- `LeaseKeeper`: lease renewal on its own connection, called from the worker's heartbeat thread so
  that a handler blocking the event loop cannot starve it.

Every method that hands a job back to the backend checks the lease token of the `Reserved` it is
given, so a worker whose lease expired (and whose job went to someone else) cannot ack, release or
fail it any more.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from runequeue.failure_reasons import FailReason, reason_of

if TYPE_CHECKING:
    from runequeue.batch_state import BatchRecord


@dataclasses.dataclass(frozen=True, slots=True)
class Outgoing:
    """A job on its way into a backend."""

    job_id: str
    queue: str
    raw: bytes
    delay_s: float = 0.0
    max_tries: int | None = None
    # A unique job (`Job.unique_for`): stored only while no other job holds ``unique_key`` on its
    # queue; the lock lasts ``unique_for_s`` at most (see `push_unique`).
    unique_key: str | None = None
    unique_for_s: float = 0.0


@dataclasses.dataclass(frozen=True, slots=True)
class Reserved:
    """One reservation: the stored bytes plus the driver's receipt (the lease token)."""

    queue: str
    job_id: str
    raw: bytes
    attempts: int  # including this one: attempts are counted when a job is reserved
    token: str
    # Its last worker died running it (its lease expired): it runs alone, so that if it is what
    # kills workers, it takes no other job down with it again.
    recovered: bool = False


@dataclasses.dataclass(frozen=True, slots=True)
class QueueCounts:
    """A queue's jobs by state (`Driver.counts`); their sum is `Driver.size`."""

    ready: int  # may run now (a job recovered from a dead worker included)
    delayed: int  # waiting for their time (a delay, a backoff, a release)
    reserved: int  # running, or leased by a worker that may have died (until the lease ends)

    @property
    def total(self) -> int:
        return self.ready + self.delayed + self.reserved


@dataclasses.dataclass(frozen=True, slots=True)
class Batch:
    """What one reserve call returned, and how long until the next delayed job is due.

    ``recovered_waiting``: jobs recovered from a dead worker wait for a worker that runs nothing
    else (see `Driver.reserve`'s ``alone``).
    """

    jobs: list[Reserved]
    next_due_s: float | None = None
    recovered_waiting: bool = False


@dataclasses.dataclass(frozen=True, slots=True)
class Buried:
    """A failed job kept in the backend's outbox until the failed-job store has recorded it."""

    queue: str
    job_id: str
    raw: bytes
    error: str

    @property
    def reason(self) -> FailReason:
        """Why it failed: a handler's error, or one the backend decided (see `FailReason`)."""
        return reason_of(self.error)


class Producer(Protocol):
    """Blocking access for dispatch from plain code and for the CLI."""

    def push(self, items: Sequence[Outgoing]) -> int:
        """Store the jobs (all in one round trip); raises ``DispatchError`` when unreachable.

        Returns how many were stored: a job whose id the backend still holds is skipped (so a
        push repeated after an ambiguous network error stores nothing twice), and not counted.
        """

    def push_unique(self, item: Outgoing) -> str:
        """Store a unique job (``item.unique_key`` set) unless another job holds its lock on its
        queue; returns the id of the job that holds it: ``item``'s once stored. Taking the lock
        and storing the job are one atomic step; the lock lasts ``item.unique_for_s`` at most.
        Raises ``DispatchError`` when unreachable."""

    def batches(self) -> BatchStore:
        """The backend's batches (`Bus.batch`), on this producer's connection."""

    def size(self, queue: str) -> int:
        """Jobs waiting, delayed or reserved on ``queue``."""

    def clear(self, queue: str) -> int:
        """Delete every waiting, delayed and reserved job of ``queue``; returns how many."""

    def close(self) -> None: ...


class Driver(Protocol):
    """Asynchronous access for the worker."""

    async def push(self, items: Sequence[Outgoing]) -> int:
        """As `Producer.push`: returns how many were stored."""

    async def push_unique(self, item: Outgoing) -> str:
        """As `Producer.push_unique`."""

    async def unlock(self, queue: str, unique_key: str, job_id: str) -> None:
        """Free a unique job's lock, if ``job_id`` still holds it."""

    async def reserve(
        self, queue: str, count: int, *, lease_s: float, default_tries: int, alone: bool = False
    ) -> Batch:
        """Lease up to ``count`` ready jobs, counting an attempt for each.

        Due delayed jobs are made ready first, and expired leases are recovered: into the failed
        outbox when they have no attempts left, else kept apart as recovered jobs. A recovered job
        is handed out only to a caller that runs nothing else (``alone``), and then by itself
        (``Reserved.recovered``): a job that kills its worker then takes no neighbour with it.
        Other callers get ordinary jobs, and ``Batch.recovered_waiting`` says recovered ones wait.
        """

    async def recover(self, queue: str, *, default_tries: int) -> None:
        """Promote due delayed jobs and recover expired leases without taking any job."""

    async def wait(self, queues: Sequence[str], timeout_s: float) -> None:
        """Block until new work may be ready on one of ``queues``, or ``timeout_s`` passes."""

    async def ack(self, items: Sequence[Reserved]) -> list[bool]:
        """Delete finished jobs; ``False`` for a job whose lease was lost."""

    async def ack_then(
        self, item: Reserved, then: Sequence[Outgoing], batch: str | None = None
    ) -> bool:
        """Delete a finished job and store ``then`` (ready, on ``item``'s queue: a chain's next
        step) in one atomic step, while the lease is held; ``False``, and nothing changed, when
        it was lost. A job of ``then`` whose id is still stored is skipped. For a job of
        ``batch`` (on its queue), the batch's counters move in that same step, and the batch's
        callbacks then due are stored (`batch_state` says the rules); a batch that no longer
        exists is passed over."""

    async def release(self, item: Reserved, *, delay_s: float, refund: bool) -> bool:
        """Put a reserved job back, after ``delay_s``; ``refund`` gives the attempt back."""

    async def bury(
        self,
        item: Reserved,
        error: str,
        then: Sequence[Outgoing] = (),
        batch: str | None = None,
    ) -> bool:
        """Move a reserved job to the failed outbox (kept until `purge`), and store ``then`` (as
        for `ack_then`: a chain's catch job) and move ``batch``'s counters in the same atomic
        step."""

    async def buried(self, queue: str, limit: int) -> list[Buried]:
        """Jobs in the failed outbox of ``queue``, oldest first."""

    async def purge(self, queue: str, job_id: str) -> None:
        """Forget a buried job once the failed-job store holds it."""

    async def claim_failed_hook(self, queue: str, job_id: str) -> bool:
        """Claim the ``failed()`` hook of a job buried by the backend (`FailReason.LEASE_EXPIRED`):
        ``True`` for exactly one caller across every worker, so the hook runs at most once even
        while the failed-job store is away and every worker's sweep finds the job again."""

    async def size(self, queue: str) -> int: ...

    async def counts(self, queue: str) -> QueueCounts:
        """The queue's jobs by state: what the dashboard and ``runequeue_queue_size`` show."""

    async def clear(self, queue: str) -> int: ...

    def lease_keeper(self) -> LeaseKeeper:
        """A new `LeaseKeeper` with a connection of its own."""

    def batches(self) -> BatchStore:
        """The backend's batches, blocking (jobs use it from their threads, or through
        ``asyncio.to_thread``); opened once, closed with the driver."""

    def limits(self) -> Limits:
        """The backend's counters and locks, for job middleware."""

    def control(self) -> Control:
        """The backend's shared control values: live workers, paused queues, restart signal."""

    async def close(self) -> None: ...


class Limits(Protocol):
    """Counters and locks shared by every worker of a backend: what job middleware keeps
    (`runequeue.middleware`). Each call is atomic on its own."""

    async def hit(self, key: str, window_s: float) -> tuple[int, float]:
        """Count a hit on ``key``'s fixed window (one opened now, of ``window_s``, if none is
        open); returns the hits in the window, this one included, and seconds until it ends."""

    async def hits(self, key: str) -> tuple[int, float]:
        """The hits in ``key``'s open window and seconds until it ends; ``(0, 0.0)`` if none."""

    async def clear(self, key: str) -> None: ...

    async def lock(self, key: str, owner: str, ttl_s: float) -> bool:
        """Take ``key``'s lock for ``owner`` for ``ttl_s`` (or find it is ``owner``'s already);
        ``False`` while another owner holds it and it has not expired."""

    async def unlock(self, key: str, owner: str) -> None:
        """Free ``key``'s lock if ``owner`` holds it."""


class Control(Protocol):
    """Small values every worker and command of a backend sees, by namespace and name, each
    expiring after its ``ttl_s`` (never, if ``None``): the live workers' records, paused queues,
    the restart signal (`runequeue.worker_control`). Each call is atomic on its own."""

    async def put(
        self, namespace: str, name: str, value: str, ttl_s: float | None = None
    ) -> None: ...

    async def get_all(self, namespace: str) -> dict[str, str]:
        """Every unexpired value of ``namespace``, by name."""

    async def delete(self, namespace: str, name: str) -> None: ...

    async def purge_expired(self) -> None:
        """Drop the expired values of every namespace (those no one reads again, such as old
        hours' metrics, included) where the backend does not expire them by itself."""


class BatchStore(Protocol):
    """A backend's batches (`runequeue.batches`): blocking, like `Producer`. The counters move in
    `Driver.ack_then` and `Driver.bury`, with each job's outcome; these are the rest."""

    def create_batch(self, record: BatchRecord, jobs: Sequence[Outgoing]) -> None:
        """Store ``record`` and its ``jobs`` (on ``record.queue``) in one atomic step.
        Raises ``DispatchError`` when unreachable."""

    def add_to_batch(self, batch_id: str, queue: str, jobs: Sequence[Outgoing]) -> bool:
        """Store ``jobs`` in the batch and count them in its total and pending jobs, in one
        atomic step; ``False``, and nothing stored, when the batch does not exist."""

    def find_batch(self, batch_id: str) -> BatchRecord | None: ...

    def list_batches(self, limit: int) -> list[BatchRecord]:
        """The newest ``limit`` batches, newest first."""

    def cancel_batch(self, batch_id: str) -> bool:
        """Set the batch's ``cancelled_at`` (unless set); ``False`` when it does not exist."""

    def batch_failed(self, queue: str, batch_id: str, job_id: str) -> None:
        """Count a failure of a job of the batch that the backend failed itself (its last
        lease expired), storing the callbacks then due. Idempotent per job id."""

    def prune_batches(self, *, finished_before: float, unfinished_before: float | None) -> int:
        """Delete batches finished before ``finished_before`` (epoch seconds) and, if given,
        unfinished ones created before ``unfinished_before``; returns how many."""


class LeaseKeeper(Protocol):
    """Renews leases; used from a thread, never from the event loop."""

    def extend(self, items: Sequence[Reserved], lease_s: float) -> list[bool]:
        """Push each lease's deadline to now + ``lease_s``; ``False`` where it was lost."""

    def close(self) -> None: ...


# Capabilities: what a driver may do beyond the core above. The worker looks for each once, and
# takes the faster path where a driver offers one, instead of asking for the driver's name.


@runtime_checkable
class ReservesOnWake(Protocol):
    """A driver that can wait on one queue and reserve from it in one round trip (Redis sends the
    reserve behind its BLPOP): one round trip saved per wake-up of an idle worker."""

    async def wait_and_reserve(
        self,
        queue: str,
        timeout_s: float,
        count: int,
        *,
        lease_s: float,
        default_tries: int,
        alone: bool = False,
    ) -> Batch:
        """`wait` on one queue, then `reserve` from it (in one round trip where possible)."""


@runtime_checkable
class ChecksSettings(Protocol):
    """A driver that can tell, at a worker's start, that its backend is set up to lose jobs."""

    async def check(self) -> list[str]:
        """Warnings about settings of the backend that could lose jobs (the worker logs them;
        ``--strict`` refuses to start)."""
