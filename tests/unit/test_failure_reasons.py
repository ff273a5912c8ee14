"""Failures decided inside a backend reach the worker as a typed reason (`Buried.reason`), from
texts every backend writes the same way."""

from __future__ import annotations

from importlib import resources

from runequeue.drivers.base import Buried
from runequeue.failure_reasons import (
    LEASE_EXPIRED_PREFIX,
    TOO_LARGE_PREFIX,
    FailReason,
    lease_expired_text,
    message_of,
    too_large_text,
)


def test_the_reserve_script_writes_the_texts_the_reasons_are_read_from() -> None:
    script = resources.files("runequeue.drivers").joinpath("lua", "reserve.lua").read_text()
    assert f"'{LEASE_EXPIRED_PREFIX}" in script
    assert f"'{TOO_LARGE_PREFIX}" in script


def test_reasons_of_stored_texts() -> None:
    def reason(error: str) -> FailReason:
        return Buried("q", "id", b"", error).reason

    assert reason(lease_expired_text(3)) is FailReason.LEASE_EXPIRED
    assert reason(too_large_text(10, 5)) is FailReason.TOO_LARGE
    assert reason("builtins.RuntimeError: boom\n\nTraceback ...") is FailReason.HANDLER
    assert reason("") is FailReason.HANDLER
    assert message_of(lease_expired_text(3)).startswith("the worker running attempt 3 ")
