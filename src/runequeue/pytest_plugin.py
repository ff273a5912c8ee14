"""The pytest plugin (registered as ``runequeue`` under ``pytest11``): the ``runequeue_fake``
fixture, `Queue.fake()` on for one test::

    def test_signup_sends_a_welcome(runequeue_fake):
        signup("ada@example.com")
        runequeue_fake.assert_dispatched(SendWelcomeEmail)
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from runequeue.fake import QueueFake


@pytest.fixture
def runequeue_fake() -> Iterator[QueueFake]:
    """Every dispatch of the test recorded instead of sent (`runequeue.fake.QueueFake`)."""
    from runequeue.fake import QueueFake

    with QueueFake() as fake:
        yield fake
