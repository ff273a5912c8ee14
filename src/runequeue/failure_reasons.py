"""Why a job failed inside a backend, as a typed reason and as the text failed_jobs keeps.

Most failures are a handler's error, recorded with its traceback by the worker. Two happen inside
a backend, where no worker holds the job: its last lease expired (`FailReason.LEASE_EXPIRED`; no
worker has called its ``failed()`` hook yet), or its stored payload is over the size limit
(`FailReason.TOO_LARGE`). Drivers write these texts, and the worker tells the reasons apart only
through `Buried.reason` (`reason_of`), never by matching text of its own.
"""

from __future__ import annotations

import enum

from runequeue.errors import LeaseExpired, PayloadTooLarge


class FailReason(enum.Enum):
    HANDLER = "handler"  # the job's own error, or one of its payload, recorded by a worker
    LEASE_EXPIRED = "lease_expired"
    TOO_LARGE = "too_large"


def _prefix(kind: type[Exception]) -> str:
    return f"{kind.__module__}.{kind.__qualname__}: "


LEASE_EXPIRED_PREFIX = _prefix(LeaseExpired)
TOO_LARGE_PREFIX = _prefix(PayloadTooLarge)


def lease_expired_text(attempts: int | None = None) -> str:
    which = f"attempt {attempts}" if attempts is not None else "the job's last attempt"
    return (
        f"{LEASE_EXPIRED_PREFIX}the worker running {which} stopped renewing its lease (killed "
        "or stalled), and the job has no tries left"
    )


def too_large_text(size: int | None, limit_bytes: int, kept: str = "") -> str:
    stored = f"is {size} bytes" if size is not None else f"is larger than {limit_bytes} bytes"
    limit = f"; the limit is {limit_bytes}" if size is not None else ""
    return f"{TOO_LARGE_PREFIX}stored payload {stored}{limit}{f' ({kept})' if kept else ''}"


# What marks a buried job's failed() hook as claimed, where the lease token was (no lease holds
# a buried job, so the token's place is free until the job is purged).
HOOK_CLAIMED = "failed-hook"


def reason_of(error: str) -> FailReason:
    """The reason a stored failure text gives (Lua scripts and SQL write the prefixes above)."""
    if error.startswith(LEASE_EXPIRED_PREFIX):
        return FailReason.LEASE_EXPIRED
    if error.startswith(TOO_LARGE_PREFIX):
        return FailReason.TOO_LARGE
    return FailReason.HANDLER


def message_of(error: str) -> str:
    """The message of a stored failure text, without its exception type."""
    return error.partition(": ")[2]
