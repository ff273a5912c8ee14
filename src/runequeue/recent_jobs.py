"""The last jobs each worker ran, kept in the backend for the dashboard.

A worker remembers its last `KEEP` attempts per queue (a bounded deque: one append per job, the
payload not copied) and stores them, when they changed, at each metrics flush: one value per
worker and queue in the `Control` store, expiring `RETENTION_S` after the worker's last flush.
Payloads over `PAYLOAD_LIMIT` bytes are cut (the failed-job store keeps a failed job whole).
"""

from __future__ import annotations

import collections
import time

import msgspec

from runequeue.drivers.base import Control, Reserved
from runequeue.metrics import STATUS_LABELS
from runequeue.runner import Attempt

NAMESPACE = "recent:"  # + a queue name
KEEP = 50  # per worker and queue
PAYLOAD_LIMIT = 16 * 1024
ERROR_LIMIT = 16 * 1024
RETENTION_S = 24 * 3600.0


class RecentJob(msgspec.Struct, frozen=True, kw_only=True):
    """One attempt, as the dashboard shows it."""

    id: str
    queue: str
    job: str
    status: str  # a `metrics.STATUS_LABELS` value
    attempts: int
    finished_at: float  # epoch seconds
    duration_s: float
    waited_s: float
    payload: str  # as stored (bytes that are not UTF-8 escaped), cut at PAYLOAD_LIMIT
    payload_bytes: int
    error: str = ""  # type, message and traceback, cut at ERROR_LIMIT
    worker: str = ""


_decoder = msgspec.json.Decoder(list[RecentJob])


class RecentJobs:
    """A worker's last attempts per queue, waiting for the next flush."""

    def __init__(self, keep: int = KEEP) -> None:
        self._keep = keep
        # (reservation, attempt, when it ended, its error text) per queue, oldest first.
        self._by_queue: dict[str, collections.deque[tuple[Reserved, Attempt, float, str]]] = {}
        self._changed: set[str] = set()

    def add(self, item: Reserved, attempt: Attempt) -> None:
        ring = self._by_queue.get(item.queue)
        if ring is None:
            ring = self._by_queue[item.queue] = collections.deque(maxlen=self._keep)
        # The error is written out now: holding the exception would hold its frames.
        error = "" if attempt.error is None else attempt.error_text()[:ERROR_LIMIT]
        ring.append((item, attempt, time.time(), error))
        self._changed.add(item.queue)

    def take_changed(self, worker: str) -> dict[str, list[RecentJob]]:
        """The queues with attempts since the last call, each with its last attempts."""
        changed, self._changed = self._changed, set()
        return {queue: [_record(*entry, worker) for entry in self._by_queue[queue]]
                for queue in changed}  # fmt: skip


def _record(item: Reserved, attempt: Attempt, ended: float, error: str, worker: str) -> RecentJob:
    return RecentJob(
        id=item.job_id, queue=item.queue, job=attempt.job_name,
        status=STATUS_LABELS.get(attempt.status, attempt.status.lower()),
        attempts=item.attempts, finished_at=ended, duration_s=attempt.duration_s,
        waited_s=attempt.waited_s, payload_bytes=len(item.raw),
        payload=item.raw[:PAYLOAD_LIMIT].decode(errors="backslashreplace"),
        error=error, worker=worker,
    )  # fmt: skip


async def store(control: Control, worker: str, queue: str, jobs: list[RecentJob]) -> None:
    await control.put(NAMESPACE + queue, worker, msgspec.json.encode(jobs).decode(), RETENTION_S)


async def read(control: Control, queue: str, limit: int = KEEP) -> list[RecentJob]:
    """The last ``limit`` attempts on ``queue`` across workers, newest first."""
    found: list[RecentJob] = []
    for raw in (await control.get_all(NAMESPACE + queue)).values():
        try:
            found.extend(_decoder.decode(raw))
        except msgspec.DecodeError:
            continue
    found.sort(key=lambda job: job.finished_at, reverse=True)
    return found[:limit]
