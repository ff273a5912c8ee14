"""What a worker keeps of its last attempts: plain values, never the exception (and so never
the frames and locals of the handler that raised it)."""

from __future__ import annotations

import gc
import weakref

from runequeue.drivers.base import Reserved
from runequeue.recent_jobs import PAYLOAD_LIMIT, RecentJobs, namespace_of
from runequeue.retry import Fail
from runequeue.runner import Attempt


class Held(Exception):
    pass


def test_a_failed_attempt_is_kept_as_text_only() -> None:
    recent = RecentJobs(keep=2)
    error = Held("boom")
    seen = weakref.ref(error)
    item = Reserved("default", "id1", b"x" * (PAYLOAD_LIMIT * 3), 1, "token")
    recent.add(item, Attempt(Fail("boom"), "app.Job", "id1", error, 0.1))
    del error
    gc.collect()
    assert seen() is None  # not held
    (record,) = recent.take_changed("w1")["default"]
    assert "Held: boom" in record.error and record.payload_bytes == PAYLOAD_LIMIT * 3
    assert len(record.payload) == PAYLOAD_LIMIT


def test_long_queue_names_get_a_short_namespace() -> None:
    assert namespace_of("emails") == "recent:emails"
    long = namespace_of("q" * 200)
    assert len(long) <= 64 and long != namespace_of("q" * 199)
