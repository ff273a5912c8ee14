"""Dispatch refuses a job whose data would not come back from JSON as they are (issue 10, item 14).

`payload.envelope_for`, which every dispatch path calls, decodes the job's JSON into its class the
way a worker will and compares the result field by field.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import decimal
import enum
import uuid
from typing import Any, ClassVar
from zoneinfo import ZoneInfo

import msgspec
import pytest

from runequeue import Job, roundtrip
from runequeue.errors import InvalidPayload, UnknownJob
from runequeue.job import job_class
from runequeue.payload import build_job, decode, encode, envelope_for


class Colour(enum.Enum):
    RED = "red"


@dataclasses.dataclass
class WrongType(Job, name="tests.validation.WrongType"):
    user_id: int

    async def handle(self) -> None:
        return None


class NotADataclass(Job, name="tests.validation.NotADataclass"):
    def __init__(self, user_id: int) -> None:
        self.user_id = user_id

    async def handle(self) -> None:
        return None


class UndecoratedSubclass(WrongType, name="tests.validation.UndecoratedSubclass"):
    note: str = "lost"


class OptionsOnlySubclass(WrongType, name="tests.validation.OptionsOnlySubclass"):
    """Changes options only: it has no fields of its own, so it needs no @dataclass."""

    tries = 7
    label: ClassVar[str] = "not a field"


@dataclasses.dataclass
class Loose(Job, name="tests.validation.Loose"):
    meta: dict[str, Any] = dataclasses.field(default_factory=dict)
    anything: Any = None
    items: list[Any] = dataclasses.field(default_factory=list)
    ratio: float = 0.0

    async def handle(self) -> None:
        return None


@dataclasses.dataclass(eq=False)
class Address:
    city: str
    since: dt.date


@dataclasses.dataclass(eq=False)  # compares by identity: the check must not rely on ==
class Typed(Job, name="tests.validation.Typed"):
    when: dt.datetime
    day: dt.date
    tags: tuple[str, ...]
    ids: set[int]
    amount: decimal.Decimal
    key: uuid.UUID
    colour: Colour
    blob: bytes
    scores: list[float]
    address: Address
    by_id: dict[int, str]

    async def handle(self) -> None:
        return None


@dataclasses.dataclass
class CountsItsDecodes(Job, name="tests.validation.CountsItsDecodes"):
    decodes: int = 0

    def __post_init__(self) -> None:
        self.decodes += 1  # a different job each time it is built

    async def handle(self) -> None:
        return None


@dataclasses.dataclass
class FussyPostInit(Job, name="tests.validation.FussyPostInit"):
    n: int

    def __post_init__(self) -> None:
        if self.n > 100:
            raise RuntimeError("n is too large")

    async def handle(self) -> None:
        return None


def typed_job() -> Typed:
    return Typed(
        when=dt.datetime(2026, 3, 29, 1, 30, tzinfo=dt.UTC),
        day=dt.date(2026, 1, 2),
        tags=("a", "b"),
        ids={3, 1, 2},
        amount=decimal.Decimal("10.50"),
        key=uuid.UUID("12345678-1234-5678-1234-567812345678"),
        colour=Colour.RED,
        blob=b"\x00\xff",
        scores=[1, 2.5, -0.0],  # an int in a float list comes back as the same number
        address=Address(city="Lyon", since=dt.date(2020, 5, 1)),
        by_id={1: "one", 2: "two"},
    )


def test_a_wrong_field_type_is_refused_naming_class_field_expected_and_given() -> None:
    with pytest.raises(InvalidPayload) as caught:
        envelope_for(WrongType(user_id="abc"), queue="q")  # type: ignore[arg-type]
    assert str(caught.value) == (
        "cannot dispatch WrongType: field user_id='abc': expected `int`, got `str`"
    )


def test_a_float_for_an_int_field_is_refused() -> None:
    with pytest.raises(InvalidPayload, match=r"field user_id=1\.5: expected `int`, got `float`"):
        envelope_for(WrongType(user_id=1.5), queue="q")  # type: ignore[arg-type]


def test_a_job_class_without_dataclass_is_refused_saying_how_to_fix_it() -> None:
    with pytest.raises(InvalidPayload) as caught:
        envelope_for(NotADataclass(user_id=1), queue="q")
    assert str(caught.value) == "NotADataclass is not a dataclass: decorate it with @dataclass"


def test_an_undecorated_subclass_that_adds_fields_is_refused() -> None:
    with pytest.raises(InvalidPayload) as caught:
        envelope_for(UndecoratedSubclass(user_id=1), queue="q")
    assert str(caught.value) == (
        "UndecoratedSubclass is not a dataclass: decorate it with @dataclass "
        "(without it, note is not stored)"
    )


def test_an_undecorated_subclass_that_only_sets_options_is_fine() -> None:
    envelope = envelope_for(OptionsOnlySubclass(user_id=1), queue="q")
    assert envelope.max_tries == 7


def test_the_worker_says_the_same_about_a_class_that_is_not_a_dataclass() -> None:
    with pytest.raises(UnknownJob) as caught:
        job_class("tests.validation.NotADataclass")
    assert str(caught.value) == (
        "job 'tests.validation.NotADataclass': "
        "NotADataclass is not a dataclass: decorate it with @dataclass"
    )


@pytest.mark.parametrize(
    ("job", "path", "given", "back"),
    [
        (Loose(meta={"when": dt.date(2026, 1, 2)}), "meta['when']", "date", "str"),
        (Loose(meta={"at": dt.datetime(2026, 1, 2, 3, 4)}), "meta['at']", "datetime", "str"),
        (Loose(meta={"ids": {1, 2}}), "meta['ids']", "set", "list"),
        (Loose(meta={"pair": (1, 2)}), "meta['pair']", "tuple", "list"),
        (Loose(meta={"raw": b"x"}), "meta['raw']", "bytes", "str"),
        (Loose(meta={"price": decimal.Decimal("1.5")}), "meta['price']", "Decimal", "str"),
        (Loose(meta={"key": uuid.uuid4()}), "meta['key']", "UUID", "str"),
        (Loose(anything=Colour.RED), "anything", "Colour", "str"),
        (Loose(anything=dt.time(12, 30)), "anything", "time", "str"),
        (Loose(items=[1, {"deep": [2, (3,)]}]), "items[1]['deep'][1]", "tuple", "list"),
    ],
)
def test_a_value_json_cannot_keep_is_refused_naming_its_path_and_types(
    job: Loose, path: str, given: str, back: str
) -> None:
    with pytest.raises(InvalidPayload) as caught:
        envelope_for(job, queue="q")
    message = str(caught.value)
    assert message.startswith(f"cannot dispatch Loose: field {path} = ")
    assert f"(type {given}) comes back from JSON as " in message
    assert f"(type {back}); declare a field of type {given} for it" in message
    assert "or pass a JSON-native value" in message
    assert "\n" not in message


def test_a_non_string_key_in_a_str_keyed_dict_is_refused() -> None:
    with pytest.raises(InvalidPayload, match=r"field meta's key = 1 \(type int\) comes back"):
        envelope_for(Loose(meta={1: "one"}), queue="q")  # type: ignore[dict-item]


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_nan_and_infinity_are_refused_anywhere(value: float) -> None:
    with pytest.raises(InvalidPayload, match=r"field meta\['x'\] .* JSON has no NaN or infinity"):
        envelope_for(Loose(meta={"x": value}), queue="q")
    with pytest.raises(InvalidPayload, match=r"field ratio=.*got `null` \(JSON has no NaN"):
        envelope_for(Loose(ratio=value), queue="q")


def test_json_native_values_in_loose_fields_pass() -> None:
    job = Loose(
        meta={"s": "x", "i": 1, "f": 1.5, "b": True, "n": None, "l": [1, "a"], "d": {"k": {}}},
        anything=[{"nested": [None, False, 0.1]}],
        items=["a", 2, 3.0],
        ratio=2,  # an int for a float field: the declared type, the same number
    )
    assert build_job(decode(encode(envelope_for(job, queue="q"), max_bytes=1 << 20)), attempt=1)


def test_typed_fields_of_non_json_types_round_trip_and_pass() -> None:
    envelope = envelope_for(typed_job(), queue="q")
    built = build_job(decode(encode(envelope, max_bytes=1 << 20)), attempt=1)
    assert isinstance(built, Typed)
    expected = typed_job()
    for field in dataclasses.fields(Typed):
        if field.name != "address":
            assert getattr(built, field.name) == getattr(expected, field.name), field.name
    assert (built.address.city, built.address.since) == ("Lyon", dt.date(2020, 5, 1))


def test_an_aware_datetime_in_any_zone_passes() -> None:
    job = typed_job()
    job.when = dt.datetime(2026, 7, 1, 9, 0, tzinfo=ZoneInfo("Europe/Paris"))
    envelope_for(job, queue="q")  # it comes back as the same instant, at a fixed UTC offset


def test_a_wrong_value_inside_an_eq_false_dataclass_is_found() -> None:
    job = typed_job()
    job.address = Address(city="Lyon", since="2020-05-01")  # type: ignore[arg-type]
    with pytest.raises(InvalidPayload, match=r"field address\.since = '2020-05-01' \(type str\)"):
        envelope_for(job, queue="q")


def test_a_post_init_that_changes_the_data_is_refused() -> None:
    with pytest.raises(InvalidPayload, match=r"field decodes changes from 1 to 2 when decoded"):
        envelope_for(CountsItsDecodes(), queue="q")


def test_a_post_init_that_raises_in_the_worker_is_an_invalid_payload_not_a_crash() -> None:
    raw = encode(envelope_for(FussyPostInit(n=1), queue="q"), max_bytes=1 << 20)
    tampered = raw.replace(b'"n":1', b'"n":101')
    with pytest.raises(InvalidPayload, match=r"__post_init__ raised RuntimeError: n is too large"):
        build_job(decode(tampered), attempt=1)


def test_validation_leaves_the_job_and_the_stored_data_as_they_were() -> None:
    job = Loose(meta={"a": [1, 2]}, ratio=2)
    envelope = envelope_for(job, queue="q")
    assert job == Loose(meta={"a": [1, 2]}, ratio=2)
    assert type(job.ratio) is int
    assert msgspec.json.decode(envelope.data) == {
        "meta": {"a": [1, 2]},
        "anything": None,
        "items": [],
        "ratio": 2,
    }


def test_the_decoder_is_built_once_per_class_and_shared_with_the_worker() -> None:
    assert roundtrip.decoder_for(Typed) is roundtrip.decoder_for(Typed)
