"""Lease renewal from a dedicated thread.

A handler that blocks the event loop (``time.sleep``, CPU work) must not let its lease lapse, or the
job would be handed to a second worker while it still runs. So renewal runs in a thread with its own
connection, extending every in-flight lease in one round trip every ``interval_s``.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from runequeue.drivers.base import LeaseKeeper, Reserved
from runequeue.errors import BackendFull, DriverError
from runequeue.logs import Recurring

log = logging.getLogger("runequeue.worker")


class Heartbeat:
    """Keeps the leases of tracked jobs alive; reports the ones found lost to ``on_lost``."""

    def __init__(
        self,
        keeper: LeaseKeeper,
        *,
        lease_s: float,
        interval_s: float,
        on_lost: Callable[[Reserved], None],
    ) -> None:
        self._keeper = keeper
        self._lease_s = lease_s
        self._interval_s = interval_s
        self._on_lost = on_lost
        self._backend_full = Recurring()
        self._lock = threading.Lock()
        # Keyed by lease, not job id: a retried job can be reserved again (new token) before the
        # task of its previous attempt has untracked itself.
        self._jobs: dict[tuple[str, str], Reserved] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="runequeue-heartbeat", daemon=True)

    def track(self, item: Reserved) -> None:
        with self._lock:
            self._jobs[item.job_id, item.token] = item

    def untrack(self, item: Reserved) -> None:
        with self._lock:
            self._jobs.pop((item.job_id, item.token), None)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=self._interval_s + 5)
        self._keeper.close()

    def _run(self) -> None:
        while not self._stop.wait(self._interval_s):
            with self._lock:
                jobs = list(self._jobs.values())
            if jobs:
                self._renew(jobs)

    def _renew(self, jobs: list[Reserved]) -> None:
        try:
            renewed = self._keeper.extend(jobs, self._lease_s)
        except DriverError as exc:
            # Nothing to do but try again next beat; if the backend stays away for the whole
            # lease, the jobs are handed out again and this worker's acks are refused.
            if not isinstance(exc, BackendFull):
                log.warning("could not renew %d lease(s): %s", len(jobs), exc)
            elif (left_out := self._backend_full.due()) is not None:
                log.error("could not renew %d lease(s): %s%s", len(jobs), exc,
                          Recurring.note(left_out))  # fmt: skip
            return
        self._backend_full.clear()
        for item, ok in zip(jobs, renewed, strict=True):
            if not ok:
                self.untrack(item)
                self._on_lost(item)
