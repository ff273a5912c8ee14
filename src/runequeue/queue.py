"""`Queue`: dispatch jobs, and look at or clear queues, on the backend a `QueueConfig` names.

Connections are opened on first use and kept per configuration (and, for asyncio, per event loop),
so dispatching costs one round trip, never a new connection.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import threading
import weakref
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, TypedDict, Unpack

import msgspec

from runequeue import events, payload
from runequeue.config import QueueConfig
from runequeue.drivers import open_driver, open_producer
from runequeue.drivers.base import BatchStore, Driver, Outgoing, Producer
from runequeue.drivers.memory_batches import SyncBatches
from runequeue.drivers.sync import SyncDriver
from runequeue.errors import DispatchError
from runequeue.job import Backoff, Job
from runequeue.run_now import run_now

if TYPE_CHECKING:
    from runequeue.failed_store import FailedJobStore
    from runequeue.fake import QueueFake

Delay = float | dt.timedelta | dt.datetime


class DispatchOptions(TypedDict, total=False):
    """What one dispatch may override; every ``Queue.dispatch*`` takes them as keywords.

    Attributes:
        queue: the queue name (default: the job's ``queue``, then ``config.queue_name``).
        delay: seconds, a ``timedelta``, or an aware ``datetime`` to run at.
        tries, timeout, backoff: the job class's options, for this dispatch.
    """

    queue: str | None
    delay: Delay | None
    tries: int | None
    timeout: float | None
    backoff: Backoff | None


_OPTION_NAMES = DispatchOptions.__optional_keys__


class Queue:
    """The facade user code calls: ``Queue.dispatch(config, job)``."""

    @staticmethod
    def dispatch(
        config: QueueConfig,
        job: Job,
        *,
        connection: object | None = None,
        after_commit: bool | None = None,
        **options: Unpack[DispatchOptions],
    ) -> str:
        """Send ``job`` to its queue and return its id. For a unique job (``unique_for``) whose
        lock another job holds, nothing is stored and that job's id is returned.

        Args:
            config: where jobs go.
            job: the job; its class options apply unless overridden here.
            connection: your SQLAlchemy ``Connection`` or ``Session`` on the database
                ``DATABASE_URL`` names (database driver): the job is written in its open
                transaction, so it exists if and only if that transaction commits
                (`runequeue.transactional`). Not committed here. On another driver, with
                ``after_commit``, the Session whose commit the job waits for.
            after_commit: hold the job until the surrounding transaction commits, drop it on
                rollback, send it at once when none is open (`runequeue.after_commit`);
                ``None`` takes the job class's ``after_commit``.
            options: `DispatchOptions` (``queue``, ``delay``, ``tries``, ``timeout``,
                ``backoff``); a name that is not one of them raises ``TypeError``.

        Raises:
            DispatchError: the backend could not be reached in ``config.dispatch_timeout_s``.
            PayloadTooLarge, InvalidPayload: the job cannot be stored.
            Exception: with the ``sync`` driver, whatever the job raised.
        """
        item = _encoder(config, options)(job)
        target = _connection(config, job)
        faked = _fake is not None and _fake.fakes(item)
        in_transaction = connection is not None and not faked
        if in_transaction and target.driver == "database":
            from runequeue.transactional import store_in_transaction

            store_in_transaction(target, connection, [item])
            _queued_if_listening(target, item)
            return item.job_id
        if after_commit if after_commit is not None else job.after_commit:
            from runequeue.after_commit import hold

            if not faked and hold(lambda: _store_one(target, item), connection):
                return item.job_id  # stored once the caller's transaction commits
        elif in_transaction:
            from runequeue.transactional import store_in_transaction

            store_in_transaction(target, connection, [item])  # refuses: not the database driver
        return _store_one(target, item)

    @staticmethod
    async def dispatch_async(
        config: QueueConfig,
        job: Job,
        *,
        connection: object | None = None,
        after_commit: bool | None = None,
        **options: Unpack[DispatchOptions],
    ) -> str:
        """`dispatch` for async code: the same arguments, awaited (``connection`` may be an
        ``AsyncConnection`` or ``AsyncSession``). A job held for a commit is sent by the
        session's commit, blocking (sessions call their hooks synchronously)."""
        item = _encoder(config, options)(job)
        target = _connection(config, job)
        faked = _fake is not None and _fake.fakes(item)
        in_transaction = connection is not None and not faked
        if in_transaction and target.driver == "database":
            from runequeue.transactional import store_in_transaction_async

            await store_in_transaction_async(target, connection, [item])
            _queued_if_listening(target, item)
            return item.job_id
        if after_commit if after_commit is not None else job.after_commit:
            from runequeue.after_commit import hold

            if not faked and hold(lambda: _store_one(target, item), connection):
                return item.job_id
        elif in_transaction:
            from runequeue.transactional import store_in_transaction_async

            await store_in_transaction_async(target, connection, [item])  # refuses
        if item.unique_key is None:
            await _push_async(target, [item])
        elif (holder := await _push_unique_async(target, item)) != item.job_id:
            return holder
        if events.listening(events.JobQueued):
            _queued(target, [item])
        return item.job_id

    @staticmethod
    def dispatch_many(
        config: QueueConfig,
        jobs: Iterable[Job],
        **options: Unpack[DispatchOptions],
    ) -> list[str]:
        """Dispatch many jobs in one round trip per connection; returns their ids in order.

        Takes the same options as `dispatch`, applied to every job; unique jobs among them are
        stored one by one, each as `dispatch` stores it. All or nothing per connection:
        a `DispatchError` means none of that connection's jobs was stored; its ``stored`` lists
        the jobs stored on other connections before it (for jobs whose class names its own).
        """
        groups = _group(config, jobs, options)
        stored: list[str] = []
        for connection, items in groups.items():
            try:
                stored += _store_many(_producer(connection), items)
            except DispatchError as exc:
                raise _partly_stored(exc, stored) from exc
        if events.listening(events.JobQueued):
            _queued_groups(groups, stored)
        return stored

    @staticmethod
    async def dispatch_many_async(
        config: QueueConfig,
        jobs: Iterable[Job],
        **options: Unpack[DispatchOptions],
    ) -> list[str]:
        """`dispatch_many` for async code, all or nothing per connection as it is."""
        groups = _group(config, jobs, options)
        stored: list[str] = []
        for connection, items in groups.items():
            try:
                stored += await _store_many_async(connection, items)
            except DispatchError as exc:
                raise _partly_stored(exc, stored) from exc
        if events.listening(events.JobQueued):
            _queued_groups(groups, stored)
        return stored

    @staticmethod
    def fake(only: Iterable[type[Job]] | None = None) -> QueueFake:
        """Record every dispatch in this process instead of sending it, for tests::

            with Queue.fake() as fake:
                signup(user)
            fake.assert_dispatched(SendWelcomeEmail, lambda job: job.user_id == user.id)

        Jobs are validated and encoded as dispatch does; ``only`` fakes those classes and
        sends the rest. See `runequeue.fake.QueueFake` for the assertions and ``run_all``."""
        from runequeue.fake import QueueFake

        return QueueFake(only)

    @staticmethod
    def on(kind: type[events.E], listener: Callable[[events.E], object]) -> Callable[[], None]:
        """Call ``listener`` (a function or a coroutine function) with every event of type
        ``kind`` in this process: `JobQueued`, `JobProcessing`, `JobProcessed`, `JobRetrying`,
        `JobFailed`, `WorkerStopping` (``runequeue.events``). Returns a function that removes it.
        A listener's error is logged and never affects the job."""
        return events.on(kind, listener)

    @staticmethod
    def size(config: QueueConfig, queue: str | None = None) -> int:
        """Jobs waiting, delayed or running on ``queue`` (default ``config.queue_name``)."""
        return _producer(config).size(queue or config.queue_name)

    @staticmethod
    def clear(config: QueueConfig, queue: str | None = None) -> int:
        """Delete the jobs waiting, delayed or running on ``queue``; returns how many."""
        return _producer(config).clear(queue or config.queue_name)

    @staticmethod
    async def aclose_connections() -> None:
        """Close the connections ``dispatch_async`` opened on the running event loop."""
        drivers = _async_drivers.pop(asyncio.get_running_loop(), {})
        for driver in drivers.values():
            await driver.close()

    @staticmethod
    def close_connections() -> None:
        """Close the blocking connections opened by dispatch (they reopen on next use)."""
        with _lock:
            producers = list(_producers.values())
            stores = list(_stores.values())
            _producers.clear()
            _stores.clear()
            _sync_drivers.clear()
        for producer in producers:
            producer.close()
        for store in stores:
            store.close()


def _store_one(target: QueueConfig, item: Outgoing) -> str:
    """Store one job: the id holding its place (a unique job's holder, if another holds it)."""
    if item.unique_key is None:
        _producer(target).push([item])
    elif (holder := _producer(target).push_unique(item)) != item.job_id:
        return holder  # a job with the same unique id is queued or running: nothing stored
    _queued_if_listening(target, item)
    return item.job_id


def _queued_if_listening(target: QueueConfig, item: Outgoing) -> None:
    if events.listening(events.JobQueued):
        _queued(target, [item])


def _store_many(producer: Producer, items: Sequence[Outgoing]) -> list[str]:
    """Store ``items`` in one round trip; unique jobs among them each in one of their own (each
    takes its lock): the ids that hold each job's place, in order."""
    if all(item.unique_key is None for item in items):
        producer.push(items)
        return [item.job_id for item in items]
    return [
        producer.push_unique(item) if item.unique_key is not None else _push_one(producer, item)
        for item in items
    ]


async def _store_many_async(connection: QueueConfig, items: Sequence[Outgoing]) -> list[str]:
    """`_store_many` for async code."""
    if all(item.unique_key is None for item in items):
        await _push_async(connection, items)
        return [item.job_id for item in items]
    held = []
    for item in items:
        if item.unique_key is not None:
            held.append(await _push_unique_async(connection, item))
        else:
            await _push_async(connection, [item])
            held.append(item.job_id)
    return held


def _push_one(producer: Producer, item: Outgoing) -> str:
    producer.push([item])
    return item.job_id


def _queued_groups(groups: dict[QueueConfig, list[Outgoing]], ids: Sequence[str]) -> None:
    """`JobQueued` for the jobs of a bulk dispatch that were stored: ``ids`` holds, in the
    groups' order, each job's own id, or for a unique job not stored, its lock holder's."""
    held = iter(ids)
    for connection, items in groups.items():
        _queued(connection, [item for item in items if next(held) == item.job_id])


def _queued(connection: QueueConfig, items: Sequence[Outgoing]) -> None:
    for item in items:
        name = payload.peek_name(item.raw) or "?"
        events.emit(events.JobQueued(item.job_id, name, item.queue, connection.driver))


def _connection(config: QueueConfig, job: Job) -> QueueConfig:
    return config.with_driver(job.connection) if job.connection else config


def _encoder(config: QueueConfig, options: DispatchOptions) -> Callable[[Job], Outgoing]:
    """Encode jobs with one set of dispatch options, worked out once (bulk dispatch is per job)."""
    if not options.keys() <= _OPTION_NAMES:
        raise _unknown_options(options)
    queue, tries = options.get("queue"), options.get("tries")
    timeout, backoff = options.get("timeout"), options.get("backoff")
    delay_s = _delay_seconds(options.get("delay"))
    codec, default_queue = config.codec, config.queue_name

    def encode(job: Job) -> Outgoing:
        name = queue or job.queue or default_queue
        envelope = payload.envelope_for(
            job, queue=name, tries=tries, timeout=timeout, backoff=backoff
        )
        raw = codec.encode(envelope)
        if job.unique_for is None:
            return Outgoing(envelope.id, name, raw, delay_s, envelope.max_tries)
        assert not isinstance(envelope.unique, msgspec.UnsetType)
        return Outgoing(envelope.id, name, raw, delay_s, envelope.max_tries,
                        envelope.unique.key, job.unique_for)  # fmt: skip

    return encode


def _unknown_options(options: DispatchOptions) -> TypeError:
    unknown = ", ".join(sorted(options.keys() - _OPTION_NAMES))
    return TypeError(
        f"unknown dispatch option {unknown}: the options are {', '.join(sorted(_OPTION_NAMES))}"
    )


def _group(
    config: QueueConfig, jobs: Iterable[Job], options: DispatchOptions
) -> dict[QueueConfig, list[Outgoing]]:
    """Encoded jobs by the connection they go to (a job class may name its own)."""
    encode = _encoder(config, options)
    by_name: dict[str | None, list[Outgoing]] = {}
    for job in jobs:
        by_name.setdefault(job.connection, []).append(encode(job))
    groups: dict[QueueConfig, list[Outgoing]] = {}
    for name, items in by_name.items():  # "redis" named on a redis config is the same connection
        groups.setdefault(config.with_driver(name) if name else config, []).extend(items)
    return groups


def _delay_seconds(delay: Delay | None) -> float:
    if delay is None:
        return 0.0
    if isinstance(delay, dt.datetime):
        if delay.tzinfo is None:
            raise ValueError("delay datetimes must be timezone-aware")
        delay = delay - dt.datetime.now(dt.UTC)
    seconds = delay.total_seconds() if isinstance(delay, dt.timedelta) else float(delay)
    return max(seconds, 0.0)


_lock = threading.Lock()
_producers: dict[QueueConfig, Producer] = {}
_async_drivers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[QueueConfig, Driver]] = (
    weakref.WeakKeyDictionary()
)
_sync_drivers: dict[QueueConfig, SyncDriver] = {}
_stores: dict[str, FailedJobStore] = {}


def failed_store(config: QueueConfig) -> FailedJobStore:
    """The failed-job store of ``config``'s database, shared by everything in this process."""
    with _lock:
        store = _stores.get(config.database_url)
        if store is None:
            # Imported here: SQLAlchemy loads only once a job fails on the sync driver (or a
            # retry runs), not in every web app that dispatches to Redis.
            from runequeue.failed_store import FailedJobStore

            store = _stores[config.database_url] = FailedJobStore(config.database_url)
        return store


def _sync_driver(config: QueueConfig) -> SyncDriver:
    driver = _sync_drivers.get(config)
    if driver is None:
        store = failed_store(config)

        async def run(item: Outgoing, batches: SyncBatches) -> None:
            await run_now(item.raw, connection="sync", queue=item.queue, store=store,
                          codec=config.codec, batches=batches)  # fmt: skip

        driver = _sync_drivers[config] = SyncDriver(run)
    return driver


def _partly_stored(error: DispatchError, stored: Sequence[str]) -> DispatchError:
    """``error`` as raised, or, when other connections took jobs before it, naming them."""
    if not stored:
        return error
    return DispatchError(
        f"{error} ({len(stored)} jobs were already stored on other connections: "
        "DispatchError.stored lists them)",
        stored=stored,
    )


def push_encoded(config: QueueConfig, items: Sequence[Outgoing]) -> int:
    """Push already-encoded jobs (a retried failed job, a chain's first step) to ``config``'s
    backend; how many were stored (a job id the backend still holds is skipped)."""
    return _producer(config).push(items)


async def push_encoded_async(config: QueueConfig, items: Sequence[Outgoing]) -> None:
    """`push_encoded` for async code."""
    await _push_async(config, items)


def batch_store(config: QueueConfig) -> BatchStore:
    """The batches of ``config``'s backend, on this process's shared connection to it."""
    return _producer(config).batches()


# `Queue.fake()`: while set, every dispatch goes to it instead (it sends on what it does not fake).
_fake: QueueFake | None = None


def set_fake(fake: QueueFake | None) -> None:
    global _fake
    _fake = fake


def faking() -> QueueFake | None:
    return _fake


def _producer(config: QueueConfig) -> Producer:
    if _fake is not None:
        return _fake.producer(config, lambda: _real_producer(config))
    return _real_producer(config)


def _real_producer(config: QueueConfig) -> Producer:
    if config.driver == "sync":
        return _sync_driver(config)
    with _lock:
        producer = _producers.get(config)
        if producer is None:
            producer = _producers[config] = open_producer(config)
        return producer


async def _push_async(config: QueueConfig, items: Sequence[Outgoing]) -> None:
    if _fake is not None:  # the fake keeps jobs in memory: no I/O to wait for
        faked = [item for item in items if _fake.fakes(item)]
        if faked:
            _producer(config).push(faked)
        items = [item for item in items if not _fake.fakes(item)]
        if not items:
            return
    if config.driver == "sync":
        await _sync_driver(config).push_async(items)
        return
    await _async_driver(config).push(items)


async def _push_unique_async(config: QueueConfig, item: Outgoing) -> str:
    if _fake is not None and _fake.fakes(item):
        return _producer(config).push_unique(item)
    if config.driver == "sync":
        await _sync_driver(config).push_async([item])
        return item.job_id
    return await _async_driver(config).push_unique(item)


def _async_driver(config: QueueConfig) -> Driver:
    # asyncio connections belong to the loop that opened them.
    drivers = _async_drivers.setdefault(asyncio.get_running_loop(), {})
    driver = drivers.get(config)
    if driver is None:
        driver = drivers[config] = open_driver(config)
    return driver
