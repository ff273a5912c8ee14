import dataclasses
import sys

import msgspec
import pytest

from runequeue import Job
from runequeue.errors import InvalidPayload, PayloadTooLarge, UnknownJob
from runequeue.payload import build_job, decode, encode, envelope_for
from tests.support.jobs import FlakyThenOk, TypedUser


def roundtrip(job: Job, **kwargs: object) -> bytes:
    return encode(envelope_for(job, queue="default", **kwargs), max_bytes=1 << 20)  # type: ignore[arg-type]


def test_job_survives_the_roundtrip_with_its_id_and_attempt() -> None:
    raw = roundtrip(TypedUser(user_id=7))
    envelope = decode(raw)
    job = build_job(envelope, attempt=2)
    assert job == TypedUser(user_id=7)
    assert (job.job_id, job.attempt) == (envelope.id, 2)


def test_envelope_is_plain_json_with_the_documented_fields() -> None:
    body = msgspec.json.decode(roundtrip(TypedUser(user_id=7)))
    assert body["job"] == "tests.TypedUser"
    assert body["data"] == {"user_id": 7}
    assert {"id", "queue", "attempts", "max_tries", "backoff", "timeout", "created_at"} <= set(body)


def test_class_options_are_stored_and_dispatch_arguments_win() -> None:
    envelope = decode(roundtrip(FlakyThenOk(ledger="x", fail_times=1)))
    assert envelope.max_tries == 5
    envelope = decode(roundtrip(FlakyThenOk(ledger="x", fail_times=1), tries=9, backoff=[1, 2]))
    assert (envelope.max_tries, envelope.backoff) == (9, [1.0, 2.0])


def test_wrong_field_type_is_a_validation_error_not_a_crash() -> None:
    raw = roundtrip(TypedUser(user_id=7)).replace(b'"user_id":7', b'"user_id":"abc"')
    with pytest.raises(InvalidPayload, match=r"Expected `int`, got `str`"):
        build_job(decode(raw), attempt=1)


def test_missing_field_is_a_validation_error() -> None:
    raw = roundtrip(TypedUser(user_id=7)).replace(b'"user_id":7', b'"other":1')
    with pytest.raises(InvalidPayload, match="user_id"):
        build_job(decode(raw), attempt=1)


@pytest.mark.parametrize(
    "raw",
    [
        b"not json",
        b"{",
        b"[]",
        b'{"id": 1}',
        b"\x80\x04\x95pickle",
        b"[" * 100_000 + b"]" * 100_000,
    ],
)
def test_bytes_that_are_no_envelope_are_rejected(raw: bytes) -> None:
    with pytest.raises(InvalidPayload):
        decode(raw)


def test_unknown_job_name_is_rejected_without_importing_anything() -> None:
    raw = roundtrip(TypedUser(user_id=7)).replace(b'"tests.TypedUser"', b'"os.system"')
    modules = set(sys.modules)
    with pytest.raises(UnknownJob, match=r"os\.system"):
        build_job(decode(raw), attempt=1)
    assert set(sys.modules) == modules


def test_oversized_job_is_refused_at_encode() -> None:
    @dataclasses.dataclass
    class Big(Job, name="tests.unit.Big"):
        blob: str

    with pytest.raises(PayloadTooLarge):
        encode(envelope_for(Big(blob="x" * 2000), queue="q"), max_bytes=1000)


def test_unserializable_field_is_an_error_at_dispatch_time() -> None:
    @dataclasses.dataclass
    class Odd(Job, name="tests.unit.Odd"):
        thing: object

    with pytest.raises(InvalidPayload, match="cannot be stored as JSON"):
        envelope_for(Odd(thing=object()), queue="q")
