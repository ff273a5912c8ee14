"""Every ``Queue.dispatch*`` takes the same `DispatchOptions`; a misspelt one is refused, naming
the options, before anything is stored."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from runequeue import Queue, QueueConfig
from runequeue.drivers.memory import default_store
from tests.support.jobs import Record


@pytest.fixture
def memory() -> QueueConfig:
    default_store().reset()
    return QueueConfig(driver="memory")


def _dispatch_every_way(config: QueueConfig, **options: Any) -> None:
    job = Record(ledger="unused")
    Queue.dispatch(config, job, **options)
    Queue.dispatch_many(config, [job], **options)
    asyncio.run(Queue.dispatch_async(config, job, **options))
    asyncio.run(Queue.dispatch_many_async(config, [job], **options))


def test_every_dispatch_form_takes_every_option(memory: QueueConfig) -> None:
    _dispatch_every_way(memory, queue="q", delay=5, tries=2, timeout=1.5, backoff=[1, 2])
    assert Queue.size(memory, "q") == 4


@pytest.mark.parametrize("form", ["dispatch", "dispatch_many", "dispatch_async", "many_async"])
def test_a_misspelt_option_is_refused_naming_the_options(memory: QueueConfig, form: str) -> None:
    job = Record(ledger="unused")
    with pytest.raises(TypeError) as raised:
        if form == "dispatch":
            Queue.dispatch(memory, job, tires=3)  # type: ignore[call-arg]
        elif form == "dispatch_many":
            Queue.dispatch_many(memory, [job], tires=3)  # type: ignore[call-arg]
        elif form == "dispatch_async":
            asyncio.run(Queue.dispatch_async(memory, job, tires=3))  # type: ignore[call-arg]
        else:
            asyncio.run(Queue.dispatch_many_async(memory, [job], tires=3))  # type: ignore[call-arg]
    assert str(raised.value) == (
        "unknown dispatch option tires: the options are backoff, delay, queue, timeout, tries"
    )
    assert Queue.size(memory) == 0
