"""The last jobs each worker ran, kept in the backend for the dashboard.

A worker remembers its last `KEEP` attempts per queue (a bounded deque: one append per job, the
payload not copied) and stores them, when they changed, at each metrics flush: one value per
worker and queue in the `Control` store, expiring `RETENTION_S` after the worker's last flush.
Payloads over `PAYLOAD_LIMIT` bytes are cut, errors over `ERROR_LIMIT`, and a list over
`MAX_VALUE_BYTES` loses its oldest (the failed-job store keeps a failed job whole).
"""

from __future__ import annotations

import collections
import hashlib
import time
from typing import NamedTuple

import msgspec

from runequeue.drivers.base import Control, Reserved
from runequeue.metrics import STATUS_LABELS
from runequeue.runner import Attempt

NAMESPACE = "recent:"  # + a queue name
KEEP = 50  # per worker and queue
PAYLOAD_LIMIT = 4 * 1024
ERROR_LIMIT = 8 * 1024
MAX_VALUE_BYTES = 60_000  # one worker's list for one queue, encoded
MAX_NAMESPACE = 64  # `schema.job_control.namespace`
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
        self._by_queue: dict[str, collections.deque[_Seen]] = {}
        self._changed: set[str] = set()

    def add(self, item: Reserved, attempt: Attempt) -> None:
        ring = self._by_queue.get(item.queue)
        if ring is None:
            ring = self._by_queue[item.queue] = collections.deque(maxlen=self._keep)
        # Plain values only: holding the attempt would hold its exception, and so the frames
        # (and every local) of the failed handler; holding a big payload whole, all of it.
        raw = item.raw if len(item.raw) <= PAYLOAD_LIMIT else item.raw[:PAYLOAD_LIMIT]
        error = "" if attempt.error is None else attempt.error_text()[:ERROR_LIMIT]
        ring.append(_Seen(item.job_id, attempt.job_name, attempt.status, item.attempts,
                          time.time(), attempt.duration_s, attempt.waited_s, raw,
                          len(item.raw), error))  # fmt: skip
        self._changed.add(item.queue)

    def take_changed(self, worker: str) -> dict[str, list[RecentJob]]:
        """The queues with attempts since the last call, each with its last attempts."""
        changed, self._changed = self._changed, set()
        return {queue: [seen.record(queue, worker) for seen in self._by_queue[queue]]
                for queue in changed}  # fmt: skip


class _Seen(NamedTuple):
    job_id: str
    job: str
    status: str
    attempts: int
    ended: float
    duration_s: float
    waited_s: float
    raw: bytes  # at most PAYLOAD_LIMIT bytes of it
    payload_bytes: int
    error: str

    def record(self, queue: str, worker: str) -> RecentJob:
        return RecentJob(
            id=self.job_id, queue=queue, job=self.job,
            status=STATUS_LABELS.get(self.status, self.status.lower()), attempts=self.attempts,
            finished_at=self.ended, duration_s=self.duration_s, waited_s=self.waited_s,
            payload=self.raw.decode(errors="backslashreplace"),
            payload_bytes=self.payload_bytes, error=self.error, worker=worker,
        )  # fmt: skip


def namespace_of(queue: str) -> str:
    """The namespace of a queue's recent jobs: names of the `Control` store are at most 64
    characters, so a long queue name is hashed."""
    name = NAMESPACE + queue
    if len(name) <= MAX_NAMESPACE:
        return name
    return f"{NAMESPACE}#{hashlib.sha256(queue.encode()).hexdigest()[:32]}"


def encoded(jobs: list[RecentJob]) -> str:
    """The stored value: the newest of ``jobs`` that fit in `MAX_VALUE_BYTES` (MySQL's TEXT
    holds 64 KiB)."""
    value = msgspec.json.encode(jobs)
    while len(value) > MAX_VALUE_BYTES and jobs:
        jobs = jobs[max(len(jobs) // 4, 1) :]  # drop the oldest quarter
        value = msgspec.json.encode(jobs)
    return value.decode()


async def store(control: Control, worker: str, queue: str, jobs: list[RecentJob]) -> None:
    await control.put(namespace_of(queue), worker, encoded(jobs), RETENTION_S)


async def read(control: Control, queue: str, limit: int = KEEP) -> list[RecentJob]:
    """The last ``limit`` attempts on ``queue`` across workers, newest first."""
    found: list[RecentJob] = []
    for raw in (await control.get_all(namespace_of(queue))).values():
        try:
            found.extend(_decoder.decode(raw))
        except msgspec.DecodeError:
            continue
    found.sort(key=lambda job: job.finished_at, reverse=True)
    return found[:limit]
