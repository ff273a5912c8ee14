"""Job lifecycle events: ``Queue.on(JobFailed, alert)`` (Laravel's queue events).

Listeners run in the process where the event happens: `JobQueued` where a job is dispatched, the
others in the worker (or inside ``dispatch`` with the ``sync`` driver). A listener may be a plain
function or a coroutine function. Its errors are logged and never reach the job: an event cannot
fail, retry or lose a job. With no listener for an event, emitting it costs a dictionary look-up.
"""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
import logging
import threading
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    from runequeue.job import Job

log = logging.getLogger("runequeue.events")


@dataclasses.dataclass(frozen=True, slots=True)
class JobQueued:
    """A job was stored (on the ``sync`` driver: once it has run, inside ``dispatch``)."""

    job_id: str
    job_name: str
    queue: str
    connection: str


@dataclasses.dataclass(frozen=True, slots=True)
class JobProcessing:
    """An attempt is about to run ``job``'s handler."""

    job: Job
    queue: str
    attempt: int


@dataclasses.dataclass(frozen=True, slots=True)
class JobProcessed:
    """``job``'s handler returned."""

    job: Job
    queue: str
    attempt: int
    duration_s: float


@dataclasses.dataclass(frozen=True, slots=True)
class JobRetrying:
    """An attempt failed and the job will be tried again after ``delay_s``."""

    job: Job
    queue: str
    attempt: int
    error: BaseException
    delay_s: float


@dataclasses.dataclass(frozen=True, slots=True)
class JobFailed:
    """A job failed for good (it goes to ``failed_jobs``). ``job`` is None when its payload could
    not be built into one (unknown class, invalid data)."""

    job_id: str
    job_name: str
    job: Job | None
    queue: str
    attempt: int
    error: BaseException


@dataclasses.dataclass(frozen=True, slots=True)
class WorkerStopping:
    """A worker stopped taking jobs; ``status`` is the exit status it will return."""

    status: int


Event = JobQueued | JobProcessing | JobProcessed | JobRetrying | JobFailed | WorkerStopping
E = TypeVar("E", bound=Event)

_listeners: dict[type, list[Callable[[object], object]]] = {}  # event type -> listeners
_lock = threading.Lock()
_background: set[asyncio.Task[None]] = set()  # async listeners called from a running loop


def on(kind: type[E], listener: Callable[[E], object]) -> Callable[[], None]:
    """Call ``listener`` with each event of type ``kind``; returns a function that removes it."""
    call: Callable[[object], object] = listener  # type: ignore[assignment]
    with _lock:
        _listeners.setdefault(kind, []).append(call)

    def remove() -> None:
        with _lock:
            found = _listeners.get(kind, [])
            if call in found:
                found.remove(call)
            if not found:
                _listeners.pop(kind, None)

    return remove


def listening(kind: type) -> bool:
    return kind in _listeners


def any_listener() -> bool:
    return bool(_listeners)


async def emit_async(event: Event) -> None:
    """Call the listeners of ``event`` here, awaiting coroutine listeners."""
    for listener in list(_listeners.get(type(event), ())):
        try:
            result = listener(event)
            if inspect.isawaitable(result):
                await result
        except Exception:
            log.exception("a listener of %s raised; the job goes on", type(event).__name__)


def emit(event: Event) -> None:
    """Call the listeners of ``event`` from blocking code. A coroutine listener runs to its end
    here, or, when this thread runs an event loop (a blocking dispatch from async code), as a
    task of that loop."""
    for listener in list(_listeners.get(type(event), ())):
        try:
            result = listener(event)
            if inspect.isawaitable(result):
                _finish(result)
        except Exception:
            log.exception("a listener of %s raised; the job goes on", type(event).__name__)


def _finish(awaitable: Awaitable[object]) -> None:
    async def run() -> None:
        try:
            await awaitable
        except Exception:
            log.exception("a listener raised; the job goes on")

    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        asyncio.run(run())
        return
    task = loop.create_task(run())
    _background.add(task)  # keep a reference until it ends (the loop holds tasks weakly)
    task.add_done_callback(_background.discard)
