"""``rune queue:work --processes N``: one command that starts N worker processes and keeps them
running, so a host's cores are used without Supervisor or systemd (which still restart this one).

Each child is the same command without ``--processes``. A child that crashes is started again
after a back-off that doubles (1 s, 2 s, ... 30 s; reset once a child has run for a minute); one
that exits 0 (``--max-time``, ``--max-jobs``, ``rune queue:restart``) is started again at once, on
the code now on disk, unless the command said ``--stop-when-empty``. SIGTERM or SIGINT is passed
to every child, which drains (finishes its running jobs); the supervisor exits when they all have,
with the worst exit status among them.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import signal
import subprocess
import threading
import time
from collections.abc import Sequence
from types import FrameType

from runequeue import signals

log = logging.getLogger("runequeue.worker")

# Each child's slot (1..N), in its environment: with --metrics-port, worker i serves on port+i-1.
SLOT_VARIABLE = "RUNE_WORKER_SLOT"
FIRST_BACKOFF_S = 1.0
MAX_BACKOFF_S = 30.0
STABLE_AFTER_S = 60.0  # a child that ran this long resets its slot's back-off
POLL_S = 0.2


@dataclasses.dataclass
class _Slot:
    number: int
    process: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    backoff_s: float = FIRST_BACKOFF_S
    start_after: float = 0.0  # monotonic time before which a crashed child is not restarted
    last_status: int = 0


class Supervisor:
    """Runs ``command`` ``processes`` times and keeps it running (see the module docstring)."""

    def __init__(self, command: Sequence[str], processes: int, *, restart_clean_exits: bool):
        self.command = list(command)
        self.slots = [_Slot(number) for number in range(1, processes + 1)]
        self.restart_clean_exits = restart_clean_exits
        self._stopping = threading.Event()

    def run(self) -> int:
        """Supervise until stopped (or, with ``restart_clean_exits`` off, until every child has
        exited); returns the worst child exit status (0 when all were 0)."""
        stops = (signal.SIGTERM, signal.SIGINT)
        previous = {sig: signal.signal(sig, self._on_signal) for sig in stops}
        try:
            if signals.arrived_early():  # stopped while the command was starting up
                self.stop()
            for slot in self.slots:
                self._start(slot)
            while not self._all_done():
                self._tend()
                time.sleep(POLL_S)
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        worst = max((abs(slot.last_status) for slot in self.slots), default=0)
        log.info("supervisor: all %d workers exited", len(self.slots))
        return worst

    def stop(self) -> None:
        """Drain: every child gets SIGTERM, and none is started again."""
        if self._stopping.is_set():
            return
        self._stopping.set()
        log.info("supervisor: stopping %d workers (they finish their running jobs)",
                 len(self.slots))  # fmt: skip
        for slot in self.slots:
            if slot.process is not None and slot.process.poll() is None:
                slot.process.send_signal(signal.SIGTERM)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        if self._stopping.is_set() and signum == signal.SIGINT:
            for slot in self.slots:  # a second Ctrl-C: the children put their jobs back now
                if slot.process is not None and slot.process.poll() is None:
                    slot.process.send_signal(signal.SIGTERM)
            return
        self.stop()

    def _start(self, slot: _Slot) -> None:
        if self._stopping.is_set():
            return
        # A session of its own: a Ctrl-C at the terminal reaches the supervisor alone, which
        # passes one SIGTERM on (a second signal would make a child put its jobs back at once).
        environment = {**os.environ, SLOT_VARIABLE: str(slot.number)}
        slot.process = subprocess.Popen(self.command, start_new_session=True, env=environment)
        slot.started_at = time.monotonic()
        log.info("supervisor: worker %d started (pid %d)", slot.number, slot.process.pid)
        if self._stopping.is_set():  # the stop came in while it was starting: it drains too
            slot.process.send_signal(signal.SIGTERM)

    def _tend(self) -> None:
        now = time.monotonic()
        for slot in self.slots:
            process = slot.process
            if process is not None and (status := process.poll()) is not None:
                slot.process = None
                slot.last_status = status
                self._exited(slot, status, now)
            if slot.process is None and self._restarts(slot) and now >= slot.start_after:
                self._start(slot)

    def _exited(self, slot: _Slot, status: int, now: float) -> None:
        if self._stopping.is_set():
            return
        if status == 0:
            slot.backoff_s = FIRST_BACKOFF_S
            if self.restart_clean_exits:
                log.info("supervisor: worker %d exited; starting it again", slot.number)
            return
        if now - slot.started_at >= STABLE_AFTER_S:
            slot.backoff_s = FIRST_BACKOFF_S
        slot.start_after = now + slot.backoff_s
        log.warning("supervisor: worker %d exited with status %d; starting it again in %gs",
                    slot.number, status, slot.backoff_s)  # fmt: skip
        slot.backoff_s = min(slot.backoff_s * 2, MAX_BACKOFF_S)

    def _restarts(self, slot: _Slot) -> bool:
        if self._stopping.is_set():
            return False
        return slot.last_status != 0 or self.restart_clean_exits

    def _all_done(self) -> bool:
        running = any(slot.process is not None for slot in self.slots)
        if running:
            return False
        return self._stopping.is_set() or not any(self._restarts(slot) for slot in self.slots)
