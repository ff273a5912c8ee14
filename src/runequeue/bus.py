"""`Bus`: the entry point for workflows of several jobs (Laravel's ``Illuminate\\Bus``)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

from runequeue import payload
from runequeue.batches import Batch, PendingBatch, batch_of
from runequeue.chains import encoded
from runequeue.config import QueueConfig
from runequeue.drivers.base import Outgoing
from runequeue.errors import ConfigError
from runequeue.job import Job
from runequeue.payload import ChainRest, Step
from runequeue.queue import batch_store, push_encoded, push_encoded_async


class Bus:
    """``Bus.chain([...])``: jobs run one after another. ``Bus.batch([...])``: jobs run as one
    batch, with callbacks when they are done; ``Bus.find_batch(config, id)`` reads one."""

    @staticmethod
    def chain(jobs: Sequence[Job]) -> PendingChain:
        """A chain of ``jobs``: each is dispatched once the one before it has succeeded; if one
        fails for good, the rest never run (and the ``catch`` job, if set, is dispatched)."""
        return PendingChain(jobs)

    @staticmethod
    def batch(jobs: Sequence[Job]) -> PendingBatch:
        """A batch of ``jobs``, dispatched together (one round trip), run in any order; set its
        ``then``, ``catch`` and ``finally_`` jobs, then ``dispatch(config)``."""
        return PendingBatch(jobs)

    @staticmethod
    def find_batch(config: QueueConfig, batch_id: str) -> Batch | None:
        """The batch ``batch_id`` on ``config``'s backend as it is now, or ``None``."""
        store = batch_store(config)
        record = store.find_batch(batch_id)
        return batch_of(record, store, config.codec) if record is not None else None

    @staticmethod
    async def find_batch_async(config: QueueConfig, batch_id: str) -> Batch | None:
        """`find_batch` for async code."""
        return await asyncio.to_thread(Bus.find_batch, config, batch_id)

    @staticmethod
    def batches(config: QueueConfig, limit: int = 50) -> list[Batch]:
        """The newest ``limit`` batches on ``config``'s backend, newest first."""
        store = batch_store(config)
        return [batch_of(record, store, config.codec) for record in store.list_batches(limit)]

    @staticmethod
    def prune_batches(
        config: QueueConfig, *, hours: float = 24, unfinished_hours: float | None = None
    ) -> int:
        """Delete batches finished more than ``hours`` ago and, with ``unfinished_hours``,
        unfinished ones created longer ago than that; returns how many."""
        now = time.time()
        unfinished_before = None if unfinished_hours is None else now - unfinished_hours * 3600
        return batch_store(config).prune_batches(
            finished_before=now - hours * 3600, unfinished_before=unfinished_before
        )


class PendingChain:
    """A chain being put together:
    ``Bus.chain([A(), B()]).on_queue("q").catch(C()).dispatch(config)``."""

    def __init__(self, jobs: Sequence[Job]) -> None:
        if not jobs:
            raise ValueError("a chain needs at least one job")
        self._jobs = list(jobs)
        self._queue: str | None = None
        self._catch: Job | None = None

    def on_queue(self, queue: str) -> PendingChain:
        """Run every job of the chain, and its catch job, on ``queue``."""
        self._queue = queue
        return self

    def catch(self, job: Job) -> PendingChain:
        """Dispatch ``job`` once if a step of the chain fails for good (its tries used up)."""
        self._catch = job
        return self

    def dispatch(self, config: QueueConfig) -> str:
        """Store the chain's first job; returns the chain's id. With the ``sync`` driver the
        whole chain runs here, in order.

        Raises:
            ConfigError: the jobs name different connections.
            DispatchError, PayloadTooLarge, InvalidPayload: as `Queue.dispatch`.
        """
        chain_id, first, connection = self._first(config)
        push_encoded(connection, [first])
        return chain_id

    async def dispatch_async(self, config: QueueConfig) -> str:
        """`dispatch` for async code."""
        chain_id, first, connection = self._first(config)
        await push_encoded_async(connection, [first])
        return chain_id

    def _first(self, config: QueueConfig) -> tuple[str, Outgoing, QueueConfig]:
        jobs = [*self._jobs, *([self._catch] if self._catch is not None else [])]
        connections = {job.connection for job in jobs}
        if len(connections) > 1:
            raise ConfigError(
                "the jobs of a chain must use one connection; these name "
                + ", ".join(sorted(repr(name) for name in connections))
            )
        (connection_name,) = connections
        connection = config.with_driver(connection_name) if connection_name else config
        queue = self._queue or self._jobs[0].queue or config.queue_name
        # Every job is encoded (and so checked) now: a step that cannot be stored is refused
        # here, not when the step before it finishes.
        first, *rest = [_step_of(job, queue) for job in self._jobs]
        catch = _step_of(self._catch, queue) if self._catch is not None else None
        chain_id = payload.new_job_id()
        follows = ChainRest(id=chain_id, next=rest, catch=catch) if rest or catch else None
        return chain_id, encoded(first, follows, config.codec), connection


def _step_of(job: Job, queue: str) -> Step:
    envelope = payload.envelope_for(job, queue=queue)
    return Step(
        id=envelope.id, job=envelope.job, data=envelope.data, queue=queue,
        max_tries=envelope.max_tries, backoff=envelope.backoff, timeout=envelope.timeout,
    )  # fmt: skip
