"""SIGTERM and SIGINT as a worker's graceful stop, for ``rune queue:work``.

Only a worker that owns its process takes the signals over (``WorkerOptions.handle_signals``): one
embedded in a web server's event loop must leave them to the server. And the command catches them
from its first line, not from the moment its event loop runs: a supervisor that stops a worker
while it is still importing job modules or connecting gets a clean exit (status 0), not death by
SIGTERM or a ``KeyboardInterrupt`` traceback.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import threading
from collections.abc import Callable

_SIGNALS = (signal.SIGTERM, signal.SIGINT)
_arrived_early = threading.Event()


def catch_early() -> None:
    """Until a worker takes them over, note SIGTERM and SIGINT instead of dying of them."""
    _arrived_early.clear()
    for sig in _SIGNALS:
        signal.signal(sig, lambda _sig, _frame: _arrived_early.set())


def arrived_early() -> bool:
    """A signal came after `catch_early` and before a worker took the signals over."""
    return _arrived_early.is_set()


def take_over(loop: asyncio.AbstractEventLoop, stop: Callable[[], None]) -> None:
    """Make SIGTERM and SIGINT call ``stop`` on ``loop``; and call it now if one came early."""
    for sig in _SIGNALS:
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(sig, stop)
    if arrived_early():
        stop()


def give_back(loop: asyncio.AbstractEventLoop) -> None:
    for sig in _SIGNALS:
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.remove_signal_handler(sig)
