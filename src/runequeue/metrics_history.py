"""Job metrics kept in the backend for the dashboard: per-minute buckets, 24 hours of them.

Each worker adds what it counted since its last flush (every `FLUSH_INTERVAL_S`, never a write
per job) to its bucket for the current minute, and stores that bucket whole under its own name,
so workers never contend for one value; readers add the workers' buckets up. Buckets live in the
backend's `Control` store, one namespace per hour (a reader of the last hour reads two
namespaces, not a day's worth), and expire after `RETENTION_S`.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Sequence
from typing import TypeVar

import msgspec

from runequeue.drivers.base import Control
from runequeue.metrics import BUCKETS, Histogram, Snapshot

NAMESPACE = "minutes:"  # + the hour (epoch seconds // 3600)
RETENTION_S = 24 * 3600.0
FLUSH_INTERVAL_S = 5.0


class Count(msgspec.Struct, array_like=True, frozen=True):
    queue: str
    job: str
    status: str  # a `metrics.STATUS_LABELS` value
    n: int


class Spread(msgspec.Struct, array_like=True):
    """A histogram over `metrics.BUCKETS` (counts per bucket, not cumulative)."""

    queue: str
    job: str  # "" for wait times, which are per queue
    counts: list[int]
    total: float


class Minute(msgspec.Struct):
    """One worker's figures for one minute."""

    minute: int  # epoch seconds // 60
    counts: list[Count] = []
    run: list[Spread] = []
    wait: list[Spread] = []


_minute_decoder = msgspec.json.Decoder(Minute)
K = TypeVar("K", str, tuple[str, str])


def namespace_of(minute: int) -> str:
    return f"{NAMESPACE}{minute // 60}"


class MinuteBuckets:
    """A worker's side: turns its cumulative `Snapshot`s into its bucket of the current minute.
    What was counted between two flushes goes to the minute of the second."""

    def __init__(self) -> None:
        self._last = Snapshot({}, {}, {}, 0)
        self._minute = -1
        self._counts: dict[tuple[str, str, str], int] = {}
        self._run: dict[tuple[str, str], Histogram] = {}
        self._wait: dict[str, Histogram] = {}

    def add(self, snap: Snapshot, now_s: float) -> Minute | None:
        """Add what ``snap`` counted since the last call; the current minute's bucket, or
        ``None`` if nothing happened in it."""
        minute = int(now_s // 60)
        if minute != self._minute:
            self._minute = minute
            self._counts, self._run, self._wait = {}, {}, {}
        last = self._last
        self._last = snap
        for key, n in snap.jobs.items():
            if n > (before := last.jobs.get(key, 0)):
                self._counts[key] = self._counts.get(key, 0) + n - before
        _add_differences(self._run, snap.run_time, last.run_time)
        _add_differences(self._wait, snap.wait_time, last.wait_time)
        if not self._counts:
            return None
        return Minute(
            minute,
            [Count(q, job, status, n) for (q, job, status), n in sorted(self._counts.items())],
            [Spread(q, job, h.counts, h.total) for (q, job), h in sorted(self._run.items())],
            [Spread(q, "", h.counts, h.total) for q, h in sorted(self._wait.items())],
        )


def _add_differences(into: dict[K, Histogram], now: dict[K, Histogram],
                     before: dict[K, Histogram]) -> None:  # fmt: skip
    for key, histogram in now.items():
        old = before.get(key)
        if old is not None and old.count == histogram.count:
            continue
        target = into.get(key)
        if target is None:
            target = into[key] = Histogram()
        for i, count in enumerate(histogram.counts):
            target.counts[i] += count - (old.counts[i] if old else 0)
        target.total += histogram.total - (old.total if old else 0.0)
        target.count += histogram.count - (old.count if old else 0)


async def store(control: Control, worker_id: str, minute: Minute) -> None:
    await control.put(namespace_of(minute.minute), f"{minute.minute}:{worker_id}",
                      msgspec.json.encode(minute).decode(), RETENTION_S)  # fmt: skip


async def read(control: Control, *, first_minute: int, last_minute: int) -> list[Minute]:
    """Every worker's buckets from ``first_minute`` to ``last_minute`` (both included);
    unreadable ones skipped."""
    found = []
    for hour in range(first_minute // 60, last_minute // 60 + 1):
        for raw in (await control.get_all(f"{NAMESPACE}{hour}")).values():
            try:
                minute = _minute_decoder.decode(raw)
            except msgspec.DecodeError:
                continue
            if first_minute <= minute.minute <= last_minute:
                found.append(minute)
    return found


@dataclasses.dataclass
class Totals:
    """Jobs that ended one way or another, over some minutes."""

    done: int = 0
    failed: int = 0
    retried: int = 0
    released: int = 0

    def add(self, status: str, n: int) -> None:
        if status in ("done", "failed", "retried", "released"):
            setattr(self, status, getattr(self, status) + n)

    @property
    def failure_rate(self) -> float:
        """Failed for good, as a share of the jobs that ended (0 when none did)."""
        ended = self.done + self.failed
        return self.failed / ended if ended else 0.0


def per_minute(minutes: Iterable[Minute], first_minute: int, last_minute: int,
               queue: str | None = None) -> list[Totals]:  # fmt: skip
    """Totals for each minute from ``first_minute`` to ``last_minute``, of one queue or all."""
    series = [Totals() for _ in range(last_minute - first_minute + 1)]
    for minute in minutes:
        if first_minute <= minute.minute <= last_minute:
            totals = series[minute.minute - first_minute]
            for count in minute.counts:
                if queue is None or count.queue == queue:
                    totals.add(count.status, count.n)
    return series


def totals_by(minutes: Iterable[Minute], key: str) -> dict[str, Totals]:
    """Totals by ``"queue"`` or by ``"job"`` over ``minutes``."""
    found: dict[str, Totals] = {}
    for minute in minutes:
        for count in minute.counts:
            name = count.queue if key == "queue" else count.job
            found.setdefault(name, Totals()).add(count.status, count.n)
    return found


def merged(spreads: Iterable[Spread]) -> Histogram:
    total = Histogram()
    for spread in spreads:
        for i, count in enumerate(spread.counts[: len(BUCKETS)]):
            total.counts[i] += count
        total.total += spread.total
        total.count += sum(spread.counts)
    return total


def quantile(histogram: Histogram, q: float) -> float | None:
    """The ``q`` quantile, interpolated inside its bucket as Prometheus's
    ``histogram_quantile`` does; ``None`` without observations. Past the last finite bound it
    answers that bound."""
    if histogram.count == 0:
        return None
    rank = q * histogram.count
    seen = 0
    lower = 0.0
    for bound, count in zip(BUCKETS, histogram.counts, strict=True):
        if count and seen + count >= rank:
            if math.isinf(bound):
                return lower
            return lower + (bound - lower) * (rank - seen) / count
        seen += count
        lower = bound if not math.isinf(bound) else lower
    return lower


def quantiles(histogram: Histogram, qs: Sequence[float] = (0.5, 0.95, 0.99)) -> list[float | None]:
    return [quantile(histogram, q) for q in qs]
