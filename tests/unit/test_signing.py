import pytest

from runequeue.errors import BadSignature, PayloadTooLarge
from runequeue.payload import Codec, envelope_for
from tests.support.jobs import TypedUser

ENVELOPE = envelope_for(TypedUser(user_id=7), queue="default")


def test_signed_payload_roundtrips_and_is_tagged_with_its_key() -> None:
    codec = Codec(signing_keys=(("k1", "secret"),))
    raw = codec.encode(ENVELOPE)
    assert raw.startswith(b"rq1:k1:")
    assert codec.decode(raw) == ENVELOPE


def test_rotated_keys_still_verify_old_payloads() -> None:
    old = Codec(signing_keys=(("k1", "old"),)).encode(ENVELOPE)
    assert Codec(signing_keys=(("k2", "new"), ("k1", "old"))).decode(old) == ENVELOPE


@pytest.mark.parametrize(
    "tamper",
    [
        lambda raw: raw.replace(b'"user_id":7', b'"user_id":8'),
        lambda raw: raw.split(b":", 3)[-1],  # signature stripped
        lambda raw: raw.replace(b"rq1:k1:", b"rq1:k9:"),
        lambda raw: b"rq1:k1:nonsense",
    ],
    ids=["body changed", "unsigned", "unknown key", "malformed"],
)
def test_tampered_or_unsigned_payloads_are_rejected(tamper) -> None:  # type: ignore[no-untyped-def]
    codec = Codec(signing_keys=(("k1", "secret"),))
    with pytest.raises(BadSignature):
        codec.decode(tamper(codec.encode(ENVELOPE)))


def test_stored_payload_over_the_limit_is_refused_before_anything_else() -> None:
    raw = Codec().encode(ENVELOPE)
    with pytest.raises(PayloadTooLarge):
        Codec(max_bytes=len(raw) - 1).decode(raw)


def test_signing_keys_are_not_in_the_repr() -> None:
    assert "secret" not in repr(Codec(signing_keys=(("k1", "secret"),)))
