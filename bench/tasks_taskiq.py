import asyncio
import signal

from taskiq import TaskiqEvents, TaskiqState
from taskiq_redis import ListQueueBroker

from bench.completion import REDIS_URL, completion

broker = ListQueueBroker(REDIS_URL, queue_name="bench-taskiq")


@broker.task
async def noop(sent_at: float = 0.0) -> None:
    completion.bump(sent_at)


@broker.on_event(TaskiqEvents.WORKER_STARTUP)
async def wake_on_signals(state: TaskiqState) -> None:
    """Let an idle worker see SIGTERM: taskiq's handler, installed with ``signal.signal``, sets an
    asyncio Event, but nothing wakes the loop from its BRPOP, so the worker ignored the signal
    until the harness killed it (and a killed BRPOP can swallow the next run's first job). The
    same handler, installed through the loop, wakes it."""
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        handler = signal.getsignal(signum)
        if callable(handler):
            loop.add_signal_handler(signum, handler, signum, None)
