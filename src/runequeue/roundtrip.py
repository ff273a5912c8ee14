"""The dispatch-time rule for a job's data: it must come back from its JSON unchanged.

A worker rebuilds a job by decoding its stored JSON into the job's class (``payload.build_job``).
Dispatch runs that same decode on the bytes it is about to store and compares the result with the
job it was given, field by field, so that every problem shows up in the caller's stack trace instead
of in a worker later:

- a value its type hint refuses (``user_id: int`` given ``"abc"``), or a ``__post_init__`` that
  raises: the decode fails exactly as the worker's would;
- a value JSON cannot keep (a ``date``, ``set``, ``tuple``, ``Decimal``, ``UUID``, ``bytes``, an
  enum member or a NaN inside a ``dict[str, Any]``, ``Any`` or ``list[Any]`` field; an int key in a
  ``dict[str, ...]``) comes back as another type: the comparison finds it.

Typed fields (``when: datetime``, ``tags: tuple[str, ...]``, ``ids: set[int]``, ``status: Status``)
come back as what they were, so they pass.
"""

from __future__ import annotations

import dataclasses
import math
import reprlib
from typing import Any

import msgspec

from runequeue.errors import InvalidPayload
from runequeue.job import Job, dataclass_problem
from runequeue.text import one_line

# Types whose equal values are interchangeable: a decoded `str` equal to the given one is the same.
_PLAIN = frozenset({str, int, bool, type(None)})

_JSON_NATIVE = "str, int, float, bool, None, list, dict with str keys"

_short = reprlib.Repr()
_short.maxstring = 60
_short.maxother = 60


@dataclasses.dataclass(frozen=True, slots=True)
class _ClassCheck:
    """What checking one job class needs, worked out on its first dispatch."""

    decoder: msgspec.json.Decoder[Any]
    fields: tuple[str, ...]


_checks: dict[type, _ClassCheck] = {}
_encoder = msgspec.json.Encoder()


def decoder_for(cls: type[Job]) -> msgspec.json.Decoder[Any]:
    """The cached decoder of ``cls``'s data (the one the worker uses too)."""
    return _check_for(cls).decoder


def data_of(job: Job) -> bytes:
    """``job``'s fields as JSON, or ``InvalidPayload`` unless they decode back into the same job.

    The check a worker makes when it builds the job, plus a field-by-field comparison: cheap for the
    usual flat job (one decode of a few bytes, one type-and-value test per field).
    """
    cls = type(job)
    plan = _checks.get(cls) or _check_for(cls)  # the lookup inline: this is per dispatch
    try:
        data = _encoder.encode(job)
    except (TypeError, msgspec.EncodeError) as exc:
        raise InvalidPayload(f"{cls.__name__} cannot be stored as JSON: {exc}") from exc
    try:
        back = plan.decoder.decode(data)
    except msgspec.ValidationError as exc:
        raise InvalidPayload(_refused_by_type(job, exc)) from exc
    except RecursionError:
        raise InvalidPayload(f"cannot dispatch {cls.__name__}: its data nest too deeply") from None
    except Exception as exc:  # msgspec turns only TypeError and ValueError into ValidationError
        raise InvalidPayload(f"cannot dispatch {cls.__name__}: {post_init_failure(exc)}") from exc
    _compare_fields(job, back, plan.fields)
    return data


def post_init_failure(exc: BaseException) -> str:
    """What to say when decoding a job raised something else than msgspec's own errors."""
    return (
        f"its __post_init__ raised {type(exc).__name__}: {one_line(exc)} when the data were decoded"
    )


def _compare_fields(job: Job, back: Job, fields: tuple[str, ...]) -> None:
    cls = type(job)
    for name in fields:
        given, returned = getattr(job, name), getattr(back, name)
        kind = type(given)
        if kind is type(returned) and kind in _PLAIN and given == returned:
            continue  # the usual field, settled without a call
        try:
            change = _first_change(given, returned, name)
        except RecursionError:
            raise InvalidPayload(
                f"cannot dispatch {cls.__name__}: field {name} nests too deeply"
            ) from None
        if change is not None:
            raise InvalidPayload(_refused_by_round_trip(cls, *change))


def _check_for(cls: type[Job]) -> _ClassCheck:
    plan = _checks.get(cls)
    if plan is None:
        problem = dataclass_problem(cls)
        if problem is not None:
            raise InvalidPayload(problem)  # "X is not a dataclass: decorate it..."
        names = tuple(field.name for field in dataclasses.fields(cls))  # type: ignore[arg-type]
        plan = _checks[cls] = _ClassCheck(msgspec.json.Decoder(cls), names)
    return plan


def _first_change(given: Any, back: Any, path: str) -> tuple[str, Any, Any] | None:
    """Where ``back`` (decoded) first differs from ``given``: ``(path, given, back)``, or ``None``.

    Types must match too (``(1, 2) == [1, 2]`` is False, but ``1 == 1.0 == True`` would hide an
    enum member turned int); dataclasses and Structs are compared field by field, since one declared
    ``eq=False`` compares by identity.
    """
    kind = type(given)
    if kind is not type(back):
        if kind is int and type(back) is float and given == back:
            return None  # an int given to a `float` field: the declared type, same number
        return path, given, back
    if kind in _PLAIN:
        return None if given == back else (path, given, back)
    if kind is float:
        same = given == back or (math.isnan(given) and math.isnan(back))  # nan != nan
        return None if same else (path, given, back)
    if isinstance(given, list | tuple):  # a NamedTuple too: the types already match
        return _first_change_in_sequence(given, back, path)
    if kind is dict:
        return _first_change_in_dict(given, back, path)
    if dataclasses.is_dataclass(given):
        names = [field.name for field in dataclasses.fields(given)]
        return _first_change_in_attributes(given, back, names, path)
    if isinstance(given, msgspec.Struct):
        return _first_change_in_attributes(given, back, given.__struct_fields__, path)
    return None if given == back else (path, given, back)  # datetime, Decimal, set, enum...


def _first_change_in_sequence(given: Any, back: Any, path: str) -> tuple[str, Any, Any] | None:
    if len(given) != len(back):
        return path, given, back
    for index, (item, returned) in enumerate(zip(given, back, strict=True)):
        change = _first_change(item, returned, f"{path}[{index}]")
        if change is not None:
            return change
    return None


def _first_change_in_dict(
    given: dict[Any, Any], back: dict[Any, Any], path: str
) -> tuple[str, Any, Any] | None:
    if len(given) != len(back):  # two keys that became one string ({1: .., "1": ..})
        return path, given, back
    # JSON keeps the order of keys, so the pairs line up.
    for (key, value), (key_back, value_back) in zip(given.items(), back.items(), strict=True):
        if type(key) is not type(key_back) or key != key_back:
            return f"{path}'s key", key, key_back
        change = _first_change(value, value_back, f"{path}[{_short.repr(key)}]")
        if change is not None:
            return change
    return None


def _first_change_in_attributes(
    given: Any, back: Any, names: Any, path: str
) -> tuple[str, Any, Any] | None:
    for name in names:
        change = _first_change(getattr(given, name), getattr(back, name), f"{path}.{name}")
        if change is not None:
            return change
    return None


def _refused_by_round_trip(cls: type, path: str, given: Any, back: Any) -> str:
    where = f"cannot dispatch {cls.__name__}: field {path}"
    if type(given) is type(back):  # a __post_init__ that does not give back what it was given
        return (
            f"{where} changes from {_short.repr(given)} to {_short.repr(back)} when decoded "
            "from its JSON, as a worker will decode it"
        )
    what = f"{where} = {_described(given)} comes back from JSON as {_described(back)}"
    if _is_non_finite(given):
        return f"{what}; JSON has no NaN or infinity: pass None, or the number as a str"
    return (
        f"{what}; declare a field of type {type(given).__name__} for it, or pass a JSON-native "
        f"value ({_JSON_NATIVE})"
    )


def _refused_by_type(job: Job, exc: msgspec.ValidationError) -> str:
    """msgspec's "Expected `int`, got `str` - at `$.user_id`", said about the job's own field."""
    reason, _, where = str(exc).partition(" - at `$")
    name = type(job).__name__
    if not where:  # raised by __post_init__, which has no path
        return f"cannot dispatch {name}: {reason}"
    path = where.rstrip("`").removeprefix(".")
    reason = reason[:1].lower() + reason[1:]
    if path.isidentifier() and hasattr(job, path):
        value = getattr(job, path)
        hint = " (JSON has no NaN or infinity)" if _is_non_finite(value) else ""
        return f"cannot dispatch {name}: field {path}={_short.repr(value)}: {reason}{hint}"
    if reason.endswith("got `null`"):
        reason += " (None, NaN and infinity are all null in JSON)"
    return f"cannot dispatch {name}: field {path}: {reason}"


def _described(value: Any) -> str:
    if value is None:
        return "None"
    return f"{_short.repr(value)} (type {type(value).__name__})"


def _is_non_finite(value: Any) -> bool:
    return isinstance(value, float) and not math.isfinite(value)
