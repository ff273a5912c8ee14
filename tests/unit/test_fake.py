"""`Queue.fake()`: dispatches recorded, not sent (no server is reachable in these configs),
assertions that say what was dispatched, and `run_all` through a real worker."""

from __future__ import annotations

import asyncio
import dataclasses
import threading
from pathlib import Path

import pytest

from runequeue import Bus, Job, Queue, QueueConfig
from runequeue.drivers.memory import default_store
from runequeue.errors import PayloadTooLarge
from runequeue.fake import QueueFake
from tests.support.jobs import AlwaysFails, FlakyThenOk, Record, read_ledger

# Nothing listens here: a dispatch that reached the network would fail.
AWAY = QueueConfig(driver="redis", redis_url="redis://127.0.0.1:1/0",
                   database_url="postgresql://nobody@127.0.0.1:1/none")  # fmt: skip


@dataclasses.dataclass
class SendWelcome(Job, name="tests.fake.SendWelcome"):
    user_id: int

    async def handle(self) -> None:
        return None


def test_dispatches_are_recorded_not_sent(tmp_path: Path) -> None:
    with Queue.fake() as fake:
        fake.assert_nothing_dispatched()
        Queue.dispatch(AWAY, SendWelcome(1))
        Queue.dispatch(AWAY, SendWelcome(2), queue="emails", delay=60)
        Queue.dispatch_many(AWAY, [Record(str(tmp_path)), Record(str(tmp_path))])
        asyncio.run(Queue.dispatch_async(AWAY, SendWelcome(3)))

        fake.assert_dispatched(SendWelcome)
        fake.assert_dispatched(SendWelcome, lambda job: job.user_id == 2)
        fake.assert_dispatched_times(SendWelcome, 3)
        fake.assert_dispatched_times(Record, 2)
        fake.assert_not_dispatched(AlwaysFails)
        fake.assert_not_dispatched(SendWelcome, lambda job: job.user_id == 9)
        fake.assert_dispatched_on("emails", SendWelcome)
        fake.assert_dispatched_with_delay(SendWelcome, 60)
        assert [job.user_id for job in fake.jobs(SendWelcome)] == [1, 2, 3]


def test_failures_say_what_was_dispatched() -> None:
    with Queue.fake() as fake:
        Queue.dispatch(AWAY, SendWelcome(1))
        with pytest.raises(AssertionError, match=r"dispatched: 1 x tests.fake.SendWelcome "
                                                 r"\(queue default\)"):  # fmt: skip
            fake.assert_dispatched(Record)
        with pytest.raises(AssertionError, match="dispatched 2 time"):
            fake.assert_dispatched_times(SendWelcome, 2)
        with pytest.raises(AssertionError, match=r"expected no tests\.fake\.SendWelcome to"):
            fake.assert_not_dispatched(SendWelcome)
        with pytest.raises(AssertionError, match="expected nothing dispatched"):
            fake.assert_nothing_dispatched()
        with pytest.raises(AssertionError, match="on queue 'emails'"):
            fake.assert_dispatched_on("emails", SendWelcome)
        with pytest.raises(AssertionError, match="its delays: 0 s"):
            fake.assert_dispatched_with_delay(SendWelcome)


def test_a_job_that_could_not_be_stored_fails_under_the_fake_too() -> None:
    tiny = dataclasses.replace(AWAY, max_payload_bytes=64)
    with Queue.fake() as fake, pytest.raises(PayloadTooLarge):
        Queue.dispatch(tiny, SendWelcome(1))
    fake.assert_nothing_dispatched()


def test_chains_and_batches(tmp_path: Path) -> None:
    ledger = str(tmp_path / "ledger")
    with Queue.fake() as fake:
        Bus.chain([Record(ledger, "a"), SendWelcome(1), Record(ledger, "c")]).dispatch(AWAY)
        Bus.batch([SendWelcome(1), SendWelcome(2)]).name("welcomes").dispatch(AWAY)
        fake.assert_chained([Record, SendWelcome, Record])
        fake.assert_chained([Record(ledger, "a"), SendWelcome(1), Record(ledger, "c")])
        with pytest.raises(AssertionError, match=r"chains dispatched: tests\.Record -> "):
            fake.assert_chained([SendWelcome, Record])
        fake.assert_batched(lambda b: b.name == "welcomes" and len(b.jobs) == 2)
        with pytest.raises(AssertionError, match="welcomes: 2 job"):
            fake.assert_batched(lambda b: len(b.jobs) == 3)


def test_only_fakes_the_classes_named(tmp_path: Path) -> None:
    memory = QueueConfig(driver="memory")
    default_store().reset()
    with Queue.fake(only=[SendWelcome]) as fake:
        Queue.dispatch(memory, SendWelcome(1))
        Queue.dispatch(memory, Record(str(tmp_path)))
        fake.assert_dispatched(SendWelcome)
        fake.assert_not_dispatched(Record)
    assert default_store().size("default") == 1  # the Record went to the real backend
    default_store().reset()


def test_run_all_goes_through_the_real_worker_path(tmp_path: Path) -> None:
    ledger = tmp_path / "ledger"
    with Queue.fake() as fake:
        Queue.dispatch(AWAY, FlakyThenOk(str(ledger), fail_times=2), backoff=30)
        Queue.dispatch(AWAY, AlwaysFails(str(ledger)))
        Queue.dispatch(AWAY, Record(str(ledger), "later"), delay=3600)
        Bus.chain([Record(str(ledger), "one"), Record(str(ledger), "two")]).dispatch(AWAY)
        fake.run_all()
        events = [row[0] for row in read_ledger(ledger)]
    assert events.count("start") == 3 + 2  # FlakyThenOk thrice (backoffs skipped), AlwaysFails
    assert events.count("done") == 1 and "hook:Boom" in events  # twice, then its failed hook
    assert events.index("one") < events.index("two") and "later" in events
    assert [name for name, _ in fake.failed] == ["tests.AlwaysFails"]


def test_a_dispatch_from_another_thread_is_recorded() -> None:
    with Queue.fake() as fake:
        threads = [threading.Thread(target=Queue.dispatch, args=(AWAY, SendWelcome(n)))
                   for n in range(8)]  # fmt: skip
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        fake.assert_dispatched_times(SendWelcome, 8)


def test_one_fake_at_a_time() -> None:
    with Queue.fake(), pytest.raises(RuntimeError, match="already on"), Queue.fake():
        pass


def test_the_pytest_fixture(runequeue_fake: QueueFake) -> None:
    Queue.dispatch(AWAY, SendWelcome(5))
    runequeue_fake.assert_dispatched(SendWelcome, lambda job: job.user_id == 5)
