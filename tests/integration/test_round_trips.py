"""A regression guard for the worker's hot path that is not a timing: Redis round trips per job.

Reserve takes many jobs per call and acknowledgements go out in batches, so a thousand jobs cost
a few dozen round trips, not thousands. A change that adds a round trip per job fails here.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import redis.asyncio.connection

from runequeue import Queue, QueueConfig
from tests.support.jobs import TypedUser
from tests.workers import run_worker

JOBS = 2000
CEILING_PER_1000 = 100  # measured: about 45


def test_round_trips_per_thousand_jobs(
    config: QueueConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    Queue.dispatch_many(config, [TypedUser(user_id=n) for n in range(JOBS)])
    sends = 0
    send = redis.asyncio.connection.AbstractConnection.send_packed_command

    async def counted(self: Any, *args: Any, **kwargs: Any) -> None:
        nonlocal sends
        sends += 1  # one send per command or pipeline: one round trip
        await send(self, *args, **kwargs)

    monkeypatch.setattr(redis.asyncio.connection.AbstractConnection, "send_packed_command", counted)
    worker = asyncio.run(run_worker(config, concurrency=50))

    assert worker.processed == JOBS
    assert sends * 1000 / JOBS <= CEILING_PER_1000
