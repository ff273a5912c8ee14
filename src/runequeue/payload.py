"""The envelope: what a backend stores for one job. The only place bytes become objects.

An envelope is JSON (never pickle). Its ``job`` names a registered class and its ``data`` holds that
class's fields, decoded straight into the dataclass by msgspec so every field is checked against its
type hint: ``user_id: int`` arriving as ``"abc"`` is an ``InvalidPayload``, not a crash in
``handle``. Dispatch makes that same decode first (`runequeue.roundtrip`), so a job whose data would
not come back unchanged is refused before anything is stored.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import hmac
import os
import time
from collections.abc import Sequence
from typing import Any

import msgspec

from runequeue import roundtrip
from runequeue.errors import BadSignature, InvalidPayload, PayloadTooLarge
from runequeue.job import Backoff, Job, job_class

ENVELOPE_VERSION = 1  # a plain job's: its bytes are what they were before chains existed
CHAINED_VERSION = 2  # an envelope that carries the rest of its chain
# An envelope that older workers would misread: a batch's job or callback (its counters would not
# move), or a job with a retry_until deadline (it would be retried for ever).
WORKFLOWS_VERSION = 3
NEWEST_VERSION = WORKFLOWS_VERSION  # the newest this code reads
# The max_tries stored for a job with a retry_until deadline: its deadline, not a count, ends it.
UNBOUNDED_TRIES = 2**31 - 1


class Step(msgspec.Struct, frozen=True, kw_only=True):
    """A job of a chain, not dispatched yet: its envelope but for its creation time. Its id is
    fixed when the chain is dispatched, so storing it twice stores it once."""

    id: str
    job: str
    data: msgspec.Raw
    queue: str
    max_tries: int | None = None
    backoff: float | list[float] | None = None
    timeout: float | None = None


class ChainRest(msgspec.Struct, frozen=True, kw_only=True):
    """What follows a chained job: the steps still to run, in order, and the job to dispatch
    once if a step fails for good."""

    id: str
    next: list[Step] = msgspec.field(default_factory=list)
    catch: Step | None = None


class UniqueLock(msgspec.Struct, frozen=True, kw_only=True):
    """The lock a unique job holds (`Job.unique_for`), and when its worker frees it."""

    key: str
    until_processing: bool = False


class BatchRef(msgspec.Struct, frozen=True, kw_only=True):
    """The batch a job belongs to. A callback (then, catch, finally) refers to its batch too, so
    that it can read it, but is not one of its jobs: its outcome is not ``counted``."""

    id: str
    counted: bool = True


class Envelope(msgspec.Struct, frozen=True, kw_only=True):
    """One stored job. Options left ``None`` take the worker's defaults."""

    v: int = ENVELOPE_VERSION
    id: str
    job: str
    data: msgspec.Raw
    queue: str
    attempts: int = 0
    max_tries: int | None = None
    backoff: float | list[float] | None = None
    timeout: float | None = None
    created_at: float
    # Left out of a plain job's bytes altogether (UNSET is not encoded).
    chain: ChainRest | msgspec.UnsetType = msgspec.UNSET
    unique: UniqueLock | msgspec.UnsetType = msgspec.UNSET
    batch: BatchRef | msgspec.UnsetType = msgspec.UNSET
    retry_until: float | msgspec.UnsetType = msgspec.UNSET  # epoch seconds (`Job.retry_until`)


_encoder = msgspec.json.Encoder()
_envelope_decoder = msgspec.json.Decoder(Envelope)


def new_job_id() -> str:
    """A random version-4 UUID, as 32 hex digits.

    Built from ``os.urandom`` directly: ``uuid.uuid4().hex`` costs ten times as much, and bulk
    dispatch makes one per job.
    """
    raw = bytearray(os.urandom(16))
    raw[6] = (raw[6] & 0x0F) | 0x40  # version 4
    raw[8] = (raw[8] & 0x3F) | 0x80  # RFC 4122 variant
    return raw.hex()


def envelope_for(
    job: Job,
    *,
    queue: str,
    tries: int | None = None,
    timeout: float | None = None,
    backoff: Backoff | None = None,
    batch: BatchRef | None = None,
) -> Envelope:
    """Build the envelope for ``job``; explicit arguments win over the class's options.

    Raises:
        InvalidPayload: the job's class is not a dataclass, or its data would not come back from
            JSON as they are (a wrong type, a ``date`` in a ``dict[str, Any]``...): see `roundtrip`.
    """
    data = roundtrip.data_of(job)
    deadline = _deadline(job)
    if tries is None:
        tries = job.tries if deadline is None else UNBOUNDED_TRIES
    return Envelope(
        v=ENVELOPE_VERSION if batch is None and deadline is None else WORKFLOWS_VERSION,
        id=new_job_id(),
        job=type(job).job_name,
        data=msgspec.Raw(data),
        queue=queue,
        max_tries=tries,
        backoff=_stored_backoff(backoff if backoff is not None else job.backoff),
        timeout=timeout if timeout is not None else job.timeout,
        created_at=time.time(),
        unique=msgspec.UNSET if job.unique_for is None else _unique_lock(job),
        batch=msgspec.UNSET if batch is None else batch,
        retry_until=msgspec.UNSET if deadline is None else deadline,
    )


def _deadline(job: Job) -> float | None:
    """``job.retry_until()`` as epoch seconds; a job class that does not define it makes no call."""
    if type(job).retry_until is Job.retry_until:
        return None
    until = job.retry_until()
    if until is None:
        return None
    if until.tzinfo is None:
        raise InvalidPayload(f"{type(job).job_name}.retry_until() must return an aware datetime")
    return until.timestamp()


def _unique_lock(job: Job) -> UniqueLock:
    # Hashed: a unique_id can be any length, and the key is a Redis key or a database column.
    digest = hashlib.sha256(job.unique_id().encode()).hexdigest()[:40]
    return UniqueLock(
        key=f"{type(job).job_name}:{digest}", until_processing=job.unique_until == "processing"
    )


def _stored_backoff(backoff: Backoff | None) -> float | list[float] | None:
    if backoff is None or isinstance(backoff, int | float):
        return backoff
    return [float(seconds) for seconds in backoff]


def encode(envelope: Envelope, *, max_bytes: int) -> bytes:
    """The envelope's JSON, refused with ``PayloadTooLarge`` past ``max_bytes``."""
    raw = _encoder.encode(envelope)
    if len(raw) > max_bytes:
        raise PayloadTooLarge(
            f"job {envelope.job} ({envelope.id}) is {len(raw)} bytes; the limit is {max_bytes}"
        )
    return raw


def decode(raw: bytes) -> Envelope:
    """Parse stored bytes into an envelope, or raise ``InvalidPayload`` saying why."""
    try:
        envelope = _envelope_decoder.decode(raw)
    except msgspec.DecodeError as exc:
        raise InvalidPayload(f"malformed job payload: {exc}") from exc
    except RecursionError:  # a hostile payload nested thousands deep
        raise InvalidPayload("malformed job payload: nested too deeply") from None
    if envelope.v > NEWEST_VERSION:
        raise InvalidPayload(
            f"job payload version {envelope.v} is newer than this worker reads "
            f"({NEWEST_VERSION}): deploy the new runequeue to the workers first"
        )
    return envelope


def build_job(envelope: Envelope, *, attempt: int) -> Job:
    """Construct the registered job class from the envelope's data, validating every field.

    Raises:
        UnknownJob: no class is registered under the envelope's name.
        InvalidPayload: the data does not match the class's fields and types.
    """
    cls = job_class(envelope.job)
    try:
        job: Job = roundtrip.decoder_for(cls).decode(envelope.data)
    except msgspec.DecodeError as exc:
        raise InvalidPayload(f"invalid data for job {envelope.job}: {exc}") from exc
    except RecursionError:
        raise InvalidPayload(f"invalid data for job {envelope.job}: nested too deeply") from None
    except BaseException as exc:  # a __post_init__ of the user's, sys.exit too: never the worker's
        detail = roundtrip.post_init_failure(exc)
        raise InvalidPayload(f"invalid data for job {envelope.job}: {detail}") from exc
    job.job_id = envelope.id
    job.attempt = attempt
    return job


def peek_id(raw: bytes) -> str | None:
    """Best-effort job id from bytes that may not decode as an envelope."""
    return _peek(raw, "id")


def peek_name(raw: bytes) -> str | None:
    """Best-effort job name from bytes that may not decode as an envelope."""
    return _peek(raw, "job")


def _peek(raw: bytes, field: str) -> str | None:
    if raw.startswith(SIGNED_PREFIX):
        raw = raw.split(b":", 3)[-1]  # for display only: nothing is trusted or run from this
    try:
        value: Any = msgspec.json.decode(raw)
    except (msgspec.DecodeError, RecursionError):
        return None
    found = value.get(field) if isinstance(value, dict) else None
    return found if isinstance(found, str) else None


SIGNED_PREFIX = b"rq1:"
DEFAULT_MAX_BYTES = 1024 * 1024


@dataclasses.dataclass(frozen=True)
class Codec:
    """Envelope <-> stored bytes, with the size limit and optional HMAC signing.

    With ``signing_keys`` (``(key id, secret)`` pairs; the first signs, all verify, so keys can be
    rotated), stored bytes are ``rq1:<key id>:<base64 HMAC-SHA256 of the body>:<body>``, and a
    payload that is unsigned or badly signed is rejected *before* it is parsed.
    """

    max_bytes: int = DEFAULT_MAX_BYTES
    signing_keys: Sequence[tuple[str, str]] = dataclasses.field(default=(), repr=False)

    def encode(self, envelope: Envelope) -> bytes:
        body = encode(envelope, max_bytes=self.max_bytes)
        if not self.signing_keys:
            return body
        key_id, secret = self.signing_keys[0]
        return b"%s%s:%s:%s" % (SIGNED_PREFIX, key_id.encode(), _mac(secret, body), body)

    def decode(self, raw: bytes) -> Envelope:
        """The envelope in ``raw``: size checked, then signature, and only then parsed."""
        if len(raw) > self.max_bytes:
            raise PayloadTooLarge(
                f"stored payload is {len(raw)} bytes; the limit is {self.max_bytes}"
            )
        return decode(self.verified(raw) if self.signing_keys else raw)

    def verified(self, raw: bytes) -> bytes:
        if not raw.startswith(SIGNED_PREFIX):
            raise BadSignature("payload is not signed, and signing is required")
        parts = raw.split(b":", 3)
        if len(parts) != 4:
            raise BadSignature("signed payload is malformed")
        _, key_id, mac, body = parts
        secret = dict(self.signing_keys).get(key_id.decode(errors="replace"))
        if secret is None:
            raise BadSignature(f"payload is signed with unknown key {key_id[:40]!r}")
        if not hmac.compare_digest(mac, _mac(secret, body)):
            raise BadSignature("payload signature does not match")
        return body


def _mac(secret: str, body: bytes) -> bytes:
    digest = hmac.new(secret.encode(), body, hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=")
