"""The threads plain ``def handle`` jobs run in: daemons, so none can hold the process open.

`concurrent.futures.ThreadPoolExecutor` joins its threads when the interpreter exits. A thread
cannot be stopped, so one handler stuck in a call (it timed out; its attempt has already failed)
kept a worker process alive after its "worker stopped" line, for as long as the call lasted: under
Supervisor with ``--max-time``, a worker that works no more and never exits. Here the threads are
daemons: at exit a handler still running is abandoned, like the attempt it belonged to.

A call whose attempt timed out while it ran is *abandoned* (`DaemonThreadPool.abandon`): its thread
no longer counts against the pool's size, so the jobs behind it get threads of their own instead of
waiting (and timing out) behind a call that may never end. The worker watches `abandoned` and
stops once it is as large as the pool: past that, each stuck call is a thread and its memory kept
for nothing, and only a new process gets them back.
"""

from __future__ import annotations

import dataclasses
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Executor, Future
from typing import Any, ParamSpec, TypeVar

P = ParamSpec("P")
T = TypeVar("T")


@dataclasses.dataclass(frozen=True, slots=True)
class _Call:
    future: Future[Any]
    fn: Callable[..., Any]
    args: tuple[Any, ...]
    kwargs: dict[str, Any]

    def run(self) -> None:
        if not self.future.set_running_or_notify_cancel():
            return
        try:
            result = self.fn(*self.args, **self.kwargs)
        except BaseException as exc:  # SystemExit too: it belongs to the job, not to this thread
            self.future.set_exception(exc)
        else:
            self.future.set_result(result)


class DaemonThreadPool(Executor):
    """Up to ``max_workers`` daemon threads, started as needed and reused once idle."""

    def __init__(self, max_workers: int, *, name: str) -> None:
        self._max_workers = max_workers
        self._name = name
        self._calls: queue.SimpleQueue[_Call | None] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._idle = threading.Semaphore(0)
        self._lock = threading.Lock()
        self._running = 0
        self._abandoned: set[Future[Any]] = set()
        self._shut_down = False

    @property
    def running(self) -> int:
        """Calls running now: at exit, the handlers that are abandoned (a call that was cancelled
        while it waited for a thread never runs, and is not counted)."""
        return self._running

    @property
    def abandoned(self) -> int:
        """Calls still running whose attempts have ended (timed out): threads stuck for nothing."""
        return len(self._abandoned)

    def abandon(self, future: Future[Any]) -> None:
        """Stop counting ``future``'s thread against the pool's size: its attempt is over, though
        the call runs on (a thread cannot be stopped). A call that has not started never will."""
        if future.cancel():
            return
        with self._lock:
            if not future.done():
                self._abandoned.add(future)

    def submit(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> Future[T]:
        future: Future[T] = Future()
        with self._lock:
            if self._shut_down:
                raise RuntimeError("cannot run a job after the worker's threads were shut down")
            self._calls.put(_Call(future, fn, args, kwargs))
            self._add_thread_unless_one_is_idle()
        return future

    def _add_thread_unless_one_is_idle(self) -> None:
        if self._idle.acquire(blocking=False):
            return
        if len(self._threads) >= self._max_workers + len(self._abandoned):
            return
        thread = threading.Thread(
            target=self._serve, name=f"{self._name}-{len(self._threads)}", daemon=True
        )
        self._threads.append(thread)
        thread.start()

    def _serve(self) -> None:
        while (call := self._calls.get()) is not None:
            if not call.future.cancelled():  # cancelled while it waited: nothing to run
                with self._lock:
                    self._running += 1
                call.run()
                with self._lock:
                    self._running -= 1
                    self._abandoned.discard(call.future)
            del call  # drop the job before idling, as ThreadPoolExecutor does
            self._idle.release()

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Stop the threads once their current call ends; with ``wait``, wait for that.

        Without ``wait`` nothing waits for a call still running: its thread is a daemon, so it
        ends with the process.
        """
        with self._lock:
            self._shut_down = True
            if cancel_futures:
                self._cancel_waiting()
            for _ in self._threads:
                self._calls.put(None)
        if wait:
            for thread in self._threads:
                thread.join()

    def _cancel_waiting(self) -> None:
        while True:
            try:
                call = self._calls.get_nowait()
            except queue.Empty:
                return
            if call is not None:
                call.future.cancel()
