"""Job middleware: code that wraps a job's handler, as Laravel's job middleware does.

A job lists its middleware in ``middleware()``; each is an object with ``async def handle(job,
next)`` that calls ``await next()`` to go on (to the next middleware, and last to the handler), or
returns without calling it. Inside a middleware or a handler, ``job.release(delay)`` puts the job
back without counting the attempt, and ``job.fail(reason)`` fails it for good at once.

The built-in ones keep their counters and locks in the job's own backend (`Limits`: Redis keys, the
``job_limits`` and ``job_locks`` tables, the memory store), so they hold across every worker
process and host of that backend.
"""

from __future__ import annotations

import contextvars
import dataclasses
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from runequeue.drivers.base import Limits
    from runequeue.job import Job

Next = Callable[[], Awaitable[None]]

# The limits of the backend running the current job: set by the runner around the middleware.
_limits: contextvars.ContextVar[Limits] = contextvars.ContextVar("runequeue_limits")


class Middleware(Protocol):
    """What ``Job.middleware()`` returns a list of."""

    async def handle(self, job: Job, next: Next) -> None: ...


def current_limits() -> Limits:
    """The counters and locks of the backend running the current job."""
    try:
        return _limits.get()
    except LookupError:
        from runequeue.limits import process_limits

        return process_limits()  # outside a worker (the sync driver): this process's


def using_limits(limits: Limits) -> contextvars.Token[Limits]:
    return _limits.set(limits)


def reset_limits(token: contextvars.Token[Limits]) -> None:
    _limits.reset(token)


def through(job: Job, middleware: Sequence[Middleware], handler: Next) -> Next:
    """``handler`` wrapped in ``middleware``, the first one outermost."""
    call = handler
    for layer in reversed(middleware):
        call = _layer(layer, job, call)
    return call


def _layer(layer: Middleware, job: Job, inner: Next) -> Next:
    async def call() -> None:
        await layer.handle(job, inner)

    return call


@dataclasses.dataclass(frozen=True)
class RateLimited:
    """At most ``max_jobs`` jobs with this ``key`` start per ``per_seconds`` (a fixed window),
    across every worker; a job over the limit is released until the window ends, its attempt
    not counted."""

    key: str
    max_jobs: int
    per_seconds: float

    async def handle(self, job: Job, next: Next) -> None:
        count, resets_in_s = await current_limits().hit(f"rate:{self.key}", self.per_seconds)
        if count > self.max_jobs:
            job.release(resets_in_s)
            return
        await next()


@dataclasses.dataclass(frozen=True)
class WithoutOverlapping:
    """One job with this ``key`` runs at a time, across every worker. Another one is released
    for ``release_after`` seconds, its attempt not counted. The lock lasts ``expire_after``
    seconds at most, so a worker that dies holding it cannot hold it for ever (default: an hour;
    set it above the job's timeout)."""

    key: str
    release_after: float = 0.0
    expire_after: float = 3600.0

    async def handle(self, job: Job, next: Next) -> None:
        limits = current_limits()
        name = f"overlap:{self.key}"
        if not await limits.lock(name, job.job_id, self.expire_after):
            job.release(self.release_after)
            return
        try:
            await next()
        finally:
            await limits.unlock(name, job.job_id)


@dataclasses.dataclass(frozen=True)
class ThrottlesExceptions:
    """After ``max_exceptions`` exceptions within ``decay_seconds`` (from jobs with this ``key``,
    default: the job's class), jobs are released until that window ends, their attempts not
    counted, instead of running and burning tries against a service that is down. A success
    clears the count. Exceptions under the limit are retried as usual."""

    max_exceptions: int
    decay_seconds: float
    key: str = ""

    async def handle(self, job: Job, next: Next) -> None:
        limits = current_limits()
        name = f"throttle:{self.key or type(job).job_name}"
        count, resets_in_s = await limits.hits(name)
        if count >= self.max_exceptions:
            job.release(resets_in_s)
            return
        try:
            await next()
        except Exception:
            await limits.hit(name, self.decay_seconds)
            raise
        if count:
            await limits.clear(name)


@dataclasses.dataclass(frozen=True)
class Skip:
    """Skip the job (it is done, its handler never runs) when ``when`` is true, or returns true:
    ``Skip(when=self.account_closed)`` or ``Skip(when=lambda: ...)``."""

    when: bool | Callable[[], bool]

    async def handle(self, job: Job, next: Next) -> None:
        skip = self.when() if callable(self.when) else self.when
        if not skip:
            await next()


class SkipIfBatchCancelled:
    """Skip the job when its batch has been cancelled (Laravel's middleware of that name)."""

    async def handle(self, job: Job, next: Next) -> None:
        if job.batch is not None and await job.batch.cancelled_async():
            return
        await next()
