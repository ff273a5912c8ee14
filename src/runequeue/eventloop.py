"""Which asyncio event loop the worker runs on: uvloop when it is installed, else the standard one.

uvloop (``pip install 'runequeue[uvloop]'``) runs the same asyncio code with its I/O and
scheduling in C; the worker's per-job path is mostly scheduling, so it is worth having.
"""

from __future__ import annotations

import asyncio
import importlib.util
from collections.abc import Callable, Coroutine
from typing import Any, Literal, TypeVar

LoopChoice = Literal["auto", "asyncio", "uvloop"]
T = TypeVar("T")
LoopFactory = Callable[[], asyncio.AbstractEventLoop]


def uvloop_installed() -> bool:
    return importlib.util.find_spec("uvloop") is not None


def loop_factory(choice: LoopChoice) -> LoopFactory | None:
    """The factory for ``choice``; None means asyncio's own loop.

    Raises:
        ImportError: ``uvloop`` was asked for and is not installed.
    """
    if choice == "asyncio" or (choice == "auto" and not uvloop_installed()):
        return None
    import uvloop

    new_loop: LoopFactory = uvloop.new_event_loop
    return new_loop


def run(main: Coroutine[Any, Any, T], new_loop: LoopFactory | None) -> T:
    """`asyncio.run` on a loop from ``new_loop`` (None: asyncio's own)."""
    with asyncio.Runner(loop_factory=new_loop) as runner:
        return runner.run(main)
