import dataclasses

import pytest

from runequeue import Job
from runequeue.errors import DuplicateJobName, UnknownJob
from runequeue.job import job_class


def test_name_defaults_to_the_class_name_and_can_be_overridden() -> None:
    @dataclasses.dataclass
    class SendInvoiceForUnitTest(Job):
        order_id: int

    @dataclasses.dataclass
    class Renamed(Job, name="unit.renamed"):
        pass

    assert job_class("SendInvoiceForUnitTest") is SendInvoiceForUnitTest
    assert job_class("unit.renamed") is Renamed


def test_two_classes_under_one_name_is_an_error() -> None:
    @dataclasses.dataclass
    class First(Job, name="unit.clash"):
        pass

    with pytest.raises(DuplicateJobName, match=r"unit\.clash"):

        @dataclasses.dataclass
        class Second(Job, name="unit.clash"):
            pass


def test_slots_dataclass_replaces_its_own_registration() -> None:
    @dataclasses.dataclass(slots=True)
    class Slotted(Job, name="unit.slotted"):
        value: int

    assert job_class("unit.slotted") is Slotted


def test_unknown_name_raises_unknown_job() -> None:
    with pytest.raises(UnknownJob):
        job_class("unit.never-registered")


def test_a_field_may_not_hide_what_runequeue_uses_of_a_job() -> None:
    from runequeue import Queue, QueueConfig
    from runequeue.errors import InvalidPayload

    @dataclasses.dataclass
    class HidesFail(Job, name="tests.HidesFail"):
        fail: bool = False  # type: ignore[assignment]  # (the mistake refused here)

        async def handle(self) -> None: ...

    with pytest.raises(InvalidPayload, match=r"field 'fail' hides Job\.fail"):
        Queue.dispatch(QueueConfig(driver="memory"), HidesFail())
    with pytest.raises(UnknownJob, match=r"hides Job\.fail"):
        job_class("tests.HidesFail")
