"""Passwords never shown in URLs; the job threads count only the calls that run."""

from __future__ import annotations

import threading
import time

import pytest

from runequeue.threads import DaemonThreadPool
from runequeue.urls import hide_password


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://:s3cret@cache:6379/0", "redis://:***@cache:6379/0"),
        ("postgresql://app:s3cret@db/app", "postgresql://app:***@db/app"),
        ("postgresql://app@db/app?password=s3cret&sslmode=require",
         "postgresql://app@db/app?password=***&sslmode=require"),
        ("sqlite:///runequeue.sqlite3", "sqlite:///runequeue.sqlite3"),
        ("mysql://root@127.0.0.1/test", "mysql://root@127.0.0.1/test"),
        ("redis+sentinel://:pw@s1:26379,s2:26379/m/0?sentinel_password=sp",
         "redis+sentinel://:***@s1:26379,s2:26379/m/0?sentinel_password=***"),
    ],
)  # fmt: skip
def test_passwords_are_hidden_wherever_they_stand(url: str, shown: str) -> None:
    assert hide_password(url) == shown


def wait_until(condition: object, within_s: float = 5.0) -> None:
    deadline = time.monotonic() + within_s
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_a_call_cancelled_while_it_waited_is_not_counted_as_running() -> None:
    pool = DaemonThreadPool(1, name="test-pool")
    gate = threading.Event()
    first = pool.submit(gate.wait, 10)
    second = pool.submit(time.sleep, 0)
    assert second.cancel()  # still waiting for the one thread
    wait_until(lambda: pool.running == 1)
    assert pool.running == 1  # what the worker reports as abandoned at exit
    gate.set()
    assert first.result(timeout=5) is True
    wait_until(lambda: pool.running == 0)
    pool.shutdown(wait=True)
