"""A slow queue count is shown as last read while a fresh one is read beside the page; a quick
one is read for every page."""

from __future__ import annotations

import asyncio
from typing import cast

from runequeue.dashboard.reader import SlowCounts
from runequeue.drivers.base import Driver, QueueCounts


class Counter:
    def __init__(self, delay_s: float) -> None:
        self.delay_s = delay_s
        self.ready = 0
        self.reads = 0

    async def counts(self, queue: str) -> QueueCounts:
        self.reads += 1
        await asyncio.sleep(self.delay_s)
        return QueueCounts(ready=self.ready, delayed=0, reserved=0)


def test_a_slow_count_is_read_beside_the_page() -> None:
    async def scenario() -> None:
        backend = Counter(delay_s=0.05)
        counts = SlowCounts(lambda: cast(Driver, backend))
        assert (await counts.get("q"))[0].ready == 0  # the first read waits
        backend.ready = 7
        shown, age = await counts.get("q")
        assert shown.ready == 0 and age > 0  # the last read, at once; a new one starts
        await asyncio.sleep(0.1)
        assert (await counts.get("q"))[0].ready == 7
        assert (await counts.fresh("q")).ready == 7 and backend.reads == 4
        await counts.close()

    asyncio.run(scenario())


def test_a_quick_count_is_read_every_time() -> None:
    async def scenario() -> None:
        backend = Counter(delay_s=0)
        counts = SlowCounts(lambda: cast(Driver, backend))
        await counts.get("q")
        backend.ready = 3
        assert await counts.get("q") == (QueueCounts(ready=3, delayed=0, reserved=0), 0.0)

    asyncio.run(scenario())
