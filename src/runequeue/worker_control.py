"""Workers seen and steered through their backend (`Driver.control`): each worker keeps a record of
itself there (refreshed every second or so, expiring when the worker dies), which ``rune workers``
lists; and obeys the signals ``rune queue:restart`` and ``rune queue:pause``/``resume`` leave
there, read at each refresh (every second or so)."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import secrets
import socket
import time
from collections.abc import Callable, Sequence

import msgspec

from runequeue.drivers.base import Control
from runequeue.errors import DriverError

log = logging.getLogger("runequeue.worker")

WORKERS = "worker"  # namespace of the workers' records
SIGNALS = "signal"  # namespace of restart and pause
RESTART = "restart"
PAUSED = "paused:"  # + a queue name
# How often a worker refreshes its record and reads the restart and pause signals.
CONTROL_INTERVAL_S = 1.0
# A record outlives its worker's last refresh by this many refreshes (at least `MIN_TTL_S`).
TTL_SWEEPS = 3
MIN_TTL_S = 10.0


class WorkerRecord(msgspec.Struct, frozen=True, kw_only=True):
    """One live worker, as ``rune workers`` shows it."""

    id: str
    host: str
    pid: int
    connection: str
    queues: list[str]
    concurrency: int
    running: int
    processed: int
    started_at: float  # epoch seconds
    last_seen: float


_record_decoder = msgspec.json.Decoder(WorkerRecord)


@dataclasses.dataclass
class Signals:
    """What a worker's backend asks of it."""

    restart: str | None = None  # the last restart signal's stamp
    paused: frozenset[str] = frozenset()


class Presence:
    """One worker's record in its backend, and the signals it reads back."""

    def __init__(
        self,
        control: Control,
        *,
        connection: str,
        queues: Sequence[str],
        concurrency: int,
        sweep_interval_s: float,
    ) -> None:
        self.control = control
        self.id = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"
        self._connection = connection
        self._queues = list(queues)
        self._concurrency = concurrency
        self._ttl_s = max(TTL_SWEEPS * min(sweep_interval_s, 1.0), MIN_TTL_S)
        self._started_at = time.time()
        self._restart_at_start: str | None = None
        self.signals = Signals()
        self._first = True

    async def beat(self, *, running: int, processed: int) -> bool:
        """Refresh this worker's record and read the signals; whether a restart was asked for
        since this worker started (the first beat learns the signal standing at its start)."""
        record = WorkerRecord(
            id=self.id, host=socket.gethostname(), pid=os.getpid(), connection=self._connection,
            queues=self._queues, concurrency=self._concurrency, running=running,
            processed=processed, started_at=self._started_at, last_seen=time.time(),
        )  # fmt: skip
        await self.control.put(WORKERS, self.id, msgspec.json.encode(record).decode(), self._ttl_s)
        self.signals = read_signals(await self.control.get_all(SIGNALS))
        if self._first:
            self._first = False
            self._restart_at_start = self.signals.restart
            return False
        return self.signals.restart != self._restart_at_start

    async def leave(self) -> None:
        await self.control.delete(WORKERS, self.id)


class ControlLoop:
    """A worker's side of control: it checks in at start, then every `CONTROL_INTERVAL_S` (or
    each sweep, if sooner), so a pause or a restart takes effect within about that; a restart
    asked for since it started calls ``on_restart``. A backend that cannot be reached for it is
    warned about, and the worker goes on with what it last read."""

    def __init__(
        self,
        presence: Presence,
        *,
        stats: Callable[[], tuple[int, int]],
        on_restart: Callable[[], None],
        interval_s: float,
    ) -> None:
        self.presence = presence
        self._stats = stats  # (jobs running, jobs done)
        self._on_restart = on_restart
        self._interval_s = min(CONTROL_INTERVAL_S, interval_s)
        self._restarting = False

    @property
    def paused(self) -> frozenset[str]:
        return self.presence.signals.paused

    async def check_in(self) -> None:
        running, processed = self._stats()
        try:
            restart = await self.presence.beat(running=running, processed=processed)
        except DriverError as exc:
            log.warning("could not refresh this worker's record (rune workers): %s", exc)
            return
        if restart and not self._restarting:
            self._restarting = True
            log.info("restart asked for (rune queue:restart): stopping once running jobs end")
            self._on_restart()

    async def check_out(self) -> None:
        try:
            await self.presence.leave()
        except DriverError as exc:
            log.warning("could not remove this worker's record; it expires by itself: %s", exc)

    async def run(self, closing: asyncio.Event) -> None:
        while not closing.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(closing.wait(), self._interval_s)
            if not closing.is_set():
                await self.check_in()


def read_signals(values: dict[str, str]) -> Signals:
    paused = frozenset(name[len(PAUSED) :] for name in values if name.startswith(PAUSED))
    return Signals(values.get(RESTART), paused)


async def live_workers(control: Control) -> list[WorkerRecord]:
    """The workers whose records have not expired, oldest first; unreadable records skipped."""
    records = []
    for raw in (await control.get_all(WORKERS)).values():
        try:
            records.append(_record_decoder.decode(raw))
        except msgspec.DecodeError:
            continue
    return sorted(records, key=lambda record: (record.started_at, record.id))


async def signal_restart(control: Control) -> None:
    """Ask every worker of the backend to finish its running jobs and exit."""
    await control.put(SIGNALS, RESTART, f"{time.time():.6f}")


async def pause(control: Control, queue: str) -> None:
    await control.put(SIGNALS, PAUSED + queue, "1")


async def resume(control: Control, queue: str) -> None:
    await control.delete(SIGNALS, PAUSED + queue)


async def paused_queues(control: Control) -> frozenset[str]:
    return read_signals(await control.get_all(SIGNALS)).paused
