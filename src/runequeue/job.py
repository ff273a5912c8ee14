"""The user's `Job`: what to do, its per-class options, and the name -> class registry.

The registry is the only way a stored payload becomes code: a worker builds jobs solely from classes
the application defined (and so registered) in modules it imported itself. Nothing here imports a
module or resolves a dotted path taken from a payload.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import inspect
from collections.abc import Awaitable, Sequence
from typing import Any, ClassVar, Literal, get_origin

from runequeue.errors import DuplicateJobName, UnknownJob
from runequeue.job_batch import JobBatch  # at run time: msgspec reads every annotation here
from runequeue.middleware import Middleware

# Seconds before a retry: one number, or one per failed attempt (the last one repeats).
Backoff = float | Sequence[float]


@dataclasses.dataclass(frozen=True, slots=True)
class ReleaseRequest:
    """`Job.release` was called: put the job back after ``delay_s``, its attempt not counted."""

    delay_s: float


@dataclasses.dataclass(frozen=True, slots=True)
class FailRequest:
    """`Job.fail` was called: fail the job for good, with ``reason``."""

    reason: str | BaseException


class Job:
    """Base class for a queued job; subclass it as a ``@dataclass``.

    The dataclass fields are the job's data (stored as JSON). Options are plain class attributes
    (not annotated, so they are not fields): ``tries``, ``backoff`` (seconds, a number or a list
    indexed by attempt), ``timeout`` (seconds), ``queue`` and ``connection``. A job without an
    option takes the worker's default; a per-dispatch argument wins over both.

    Example:
        @dataclass
        class SendWelcomeEmail(Job):
            user_id: int
            tries = 3

            async def handle(self) -> None:
                ...
    """

    tries: ClassVar[int | None] = None
    backoff: ClassVar[Backoff | None] = None
    timeout: ClassVar[float | None] = None
    queue: ClassVar[str | None] = None
    connection: ClassVar[str | None] = None
    # Unique jobs: while a job with the same `unique_id` is queued, delayed or running (for at
    # most ``unique_for`` seconds, so a dead worker cannot hold the lock for ever), dispatching
    # another stores nothing and returns the held job's id. ``unique_until = "processing"``
    # frees the lock when the handler starts rather than when the job is done.
    unique_for: ClassVar[float | None] = None
    unique_until: ClassVar[Literal["processed", "processing"]] = "processed"
    # Fail the job after this many exceptions, even with tries left (releases by middleware do
    # not count as tries, nor as exceptions): with ``retry_until``, the one bound on failures.
    max_exceptions: ClassVar[int | None] = None
    # Hold every dispatch of this job until the caller's transaction commits (dropped on
    # rollback): see `runequeue.after_commit`.
    after_commit: ClassVar[bool] = False

    # Set by the runner on the instance it builds, for idempotency keys and logging.
    job_id: str = ""
    attempt: int = 0
    # A job of a batch (`Bus.batch`), or one of its callbacks: its batch, read when asked
    # (``self.batch.cancelled()``, ``self.batch.add([...])``). ``None`` outside a batch.
    batch: JobBatch | None = None
    # What the handler or a middleware asked for: `release` or `fail` (read by the runner).
    requested: ReleaseRequest | FailRequest | None = None

    job_name: ClassVar[str]

    def __init_subclass__(cls, *, name: str | None = None, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.job_name = name or cls.__dict__.get("job_name") or cls.__name__
        _register(cls)

    def handle(self) -> Awaitable[None] | None:
        """Do the work. Either ``async def`` or a plain ``def`` (run in a worker thread)."""
        raise NotImplementedError(f"{type(self).__name__} must define handle()")

    def failed(self, exc: BaseException) -> Awaitable[None] | None:
        """Called once when the job has failed for good. Override to clean up or alert."""
        return None

    def middleware(self) -> Sequence[Middleware]:
        """Middleware to run the handler through (`runequeue.middleware`: `RateLimited`,
        `WithoutOverlapping`, `ThrottlesExceptions`, `Skip`, ...), the first one outermost."""
        return ()

    def retry_until(self) -> dt.datetime | None:
        """A deadline instead of a try count (Laravel's ``retryUntil``): worked out when the job
        is dispatched; the job is retried, whatever ``tries`` says, until then, and fails once
        it has passed (without running, if it is reached while the job waits)."""
        return None

    def release(self, delay: float = 0) -> None:
        """Put the job back on its queue after ``delay`` seconds once the handler (or the
        middleware calling this) returns, its attempt not counted: not a failure."""
        self.requested = ReleaseRequest(float(delay))

    def fail(self, reason: str | BaseException = "") -> None:
        """Fail the job for good once the handler (or the middleware calling this) returns,
        tries left or not: its ``failed()`` hook runs and it is kept in ``failed_jobs``."""
        self.requested = FailRequest(reason)

    def unique_id(self) -> str:
        """What makes two jobs of this class the same job, for ``unique_for``: by default every
        field's value. Override to narrow it (``return str(self.user_id)``)."""
        fields = dataclasses.fields(self)  # type: ignore[arg-type]  # every job is a dataclass
        return repr([(field.name, getattr(self, field.name)) for field in fields])


_registry: dict[str, type[Job]] = {}


def _register(cls: type[Job]) -> None:
    existing = _registry.get(cls.job_name)
    # The same class defined again (a module reloaded, or @dataclass(slots=True) rebuilding the
    # class) replaces its old self; a different class claiming the name is a mistake.
    same_class = existing is not None and (existing.__module__, existing.__name__) == (
        cls.__module__,
        cls.__name__,
    )  # not __qualname__: the class that @dataclass(slots=True) builds gets it only afterwards
    if existing is not None and not same_class:
        raise DuplicateJobName(
            f"job name {cls.job_name!r} is used by both {_origin(existing)} and {_origin(cls)}; "
            "pass name=... to one of them"
        )
    _registry[cls.job_name] = cls


def _origin(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def is_registered(name: str) -> bool:
    """Whether a job class is registered under ``name`` in this process."""
    return name in _registry


def registered_count() -> int:
    """How many job classes this process has registered (by importing their modules)."""
    return len(_registry)


def job_class(name: str) -> type[Job]:
    """The job class registered under ``name``."""
    try:
        cls = _registry[name]
    except KeyError:
        raise UnknownJob(f"no job class is registered as {name!r}") from None
    problem = dataclass_problem(cls)
    if problem is not None:
        raise UnknownJob(f"job {name!r}: {problem}")
    return cls


def dataclass_problem(cls: type) -> str | None:
    """Why ``cls`` cannot carry a job's data, or ``None`` when it can.

    A job's data are its dataclass fields, so the class must be a dataclass of its own: a subclass
    of a decorated job that declares fields without ``@dataclass`` inherits ``__dataclass_fields__``
    (``dataclasses.is_dataclass`` says yes) yet its new fields would never be stored.
    """
    if "__dataclass_fields__" in cls.__dict__:
        return _hidden_attributes(cls)
    if dataclasses.is_dataclass(cls):
        lost = _undeclared_fields(cls)
        if not lost:
            return None  # a subclass that only changes options or handle() needs no decorator
        verb = "is" if len(lost) == 1 else "are"
        return (
            f"{cls.__name__} is not a dataclass: decorate it with @dataclass "
            f"(without it, {', '.join(lost)} {verb} not stored)"
        )
    return f"{cls.__name__} is not a dataclass: decorate it with @dataclass"


# What a field must not be named: a field would hide the attribute or method of Job's of that name.
_RESERVED = frozenset(("job_id", "attempt", "batch", "requested", "handle", "failed", "middleware",
                       "retry_until", "release", "fail", "unique_id"))  # fmt: skip


def _hidden_attributes(cls: type) -> str | None:
    hidden = sorted(_RESERVED.intersection(cls.__dataclass_fields__))  # type: ignore[attr-defined]
    if not hidden:
        return None
    return (
        f"{cls.__name__}'s field {hidden[0]!r} hides Job.{hidden[0]}, which runequeue uses: "
        "rename the field"
    )


def _undeclared_fields(cls: type) -> list[str]:
    """Names the class annotates itself that are not ClassVars, so are meant as fields."""
    own = inspect.get_annotations(cls)  # the class's own, not its bases'
    return [name for name, hint in own.items() if not _is_class_var(hint)]


def _is_class_var(hint: Any) -> bool:
    if isinstance(hint, str):  # under `from __future__ import annotations`
        return hint.startswith(("ClassVar", "typing.ClassVar"))
    return hint is ClassVar or get_origin(hint) is ClassVar


def is_async_handler(job: Job) -> bool:
    """Whether the job's ``handle`` is a coroutine function (else it runs in a thread)."""
    return inspect.iscoroutinefunction(job.handle)
