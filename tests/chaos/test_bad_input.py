"""Hostile and broken payloads written straight into the store: R9 (malformed), R10 (unknown job),
R11 (attempts to import or execute), R12 (oversized). Nothing is executed, nothing imported, every
one ends in failed_jobs, and the worker carries on."""

from __future__ import annotations

import dataclasses
import pickle
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from runequeue import Job, PayloadTooLarge, Queue, QueueConfig, payload
from runequeue.drivers.base import Outgoing
from tests.chaos.report import Result
from tests.support.jobs import Record, read_events
from tests.workers import failed_jobs, peak_rss_mib, push_raw, spawn_worker, work

DRIVERS = ["redis", "database-sqlite"]


def _malformed(n: int) -> list[bytes]:
    good = (
        b'{"id":"x","job":"tests.Record","data":{"ledger":"/dev/null"},'
        b'"queue":"default","created_at":0}'
    )
    shapes = [
        b"not json",
        good[: len(good) // 2],  # truncated
        b'["a", "list"]',
        b'{"id":"x","job":"tests.Record","data":{"ledger":12},"queue":"default","created_at":0}',
        b'{"id":"x","job":"tests.Record","data":{},"queue":"default","created_at":0,"attempts":"x"}',
        b"\xff\xfe\x00garbage",
        b'{"id":"x","job":"tests.Record","data":' + b"[" * 50_000 + b"]" * 50_000 + b"}",
    ]
    return [shapes[i % len(shapes)] for i in range(n)]


@pytest.mark.parametrize("kind", DRIVERS)
def test_r9_malformed_payloads_are_quarantined(
    kind: str,
    backend_for: Callable[[str], QueueConfig],
    results: list[Result],
    scale: int,
    tmp_path: Path,
) -> None:
    config = backend_for(kind)
    ledger = tmp_path / "ledger"
    valid, bad = 500 * scale, 50 * scale
    ids = Queue.dispatch_many(config, [Record(ledger=str(ledger)) for _ in range(valid)])
    push_raw(
        config, [Outgoing(f"bad-{i}", "default", raw) for i, raw in enumerate(_malformed(bad))]
    )

    worker = work(config, concurrency=10)

    done = {e.job_id for e in read_events(ledger)}
    failures = failed_jobs(config)
    results.append(
        Result("R9", kind, valid + bad, f"{bad} malformed entries injected", valid - len(done), 0,
               None, f"{len(failures)} quarantined (InvalidPayload), worker never restarted")
    )  # fmt: skip
    assert done == set(ids)
    assert sorted(f.job_id for f in failures) == sorted(f"bad-{i}" for i in range(bad))
    assert {f.summary.split(":")[0] for f in failures} == {"runequeue.errors.InvalidPayload"}, [
        f.summary[:120] for f in failures if "InvalidPayload" not in f.summary
    ]
    assert worker.processed == valid + bad


HOSTILE_NAMES = ["os.system", "subprocess.Popen", "builtins.eval", "__import__", "nope.Missing"]


class _Gadget:
    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (print, ("pickle gadget ran",))


@pytest.mark.parametrize("kind", DRIVERS)
def test_r10_r11_unknown_and_hostile_jobs_run_nothing_and_import_nothing(
    kind: str, backend_for: Callable[[str], QueueConfig], results: list[Result], tmp_path: Path
) -> None:
    config = backend_for(kind)
    sentinel = tmp_path / "pwned"
    entries = [
        b'{"id":"%s","job":"%s","data":{"command":"touch %s","args":["touch","%s"]},'
        b'"queue":"default","created_at":0}'
        % (f"name-{i}".encode(), name.encode(), str(sentinel).encode(), str(sentinel).encode())
        for i, name in enumerate(HOSTILE_NAMES)
    ]
    entries.append(pickle.dumps(_Gadget()))
    entries.append(
        b'{"id":"cls","job":"tests.Record","data":{"ledger":"/dev/null",'
        b'"__class__":"os.system","py/object":"subprocess.Popen"},"queue":"default","created_at":0}'
    )
    modules_before = set(sys.modules)
    push_raw(config, [Outgoing(f"hostile-{i}", "default", raw) for i, raw in enumerate(entries)])

    work(config, concurrency=4)

    new_modules = set(sys.modules) - modules_before
    failures = {f.job_id: f.summary for f in failed_jobs(config)}
    results.append(
        Result("R10/R11", kind, len(entries), "job names os.system, eval, __import__, ...; "
               "a pickle gadget; __class__ keys", 0, 0, None,
               f"{len(failures)} quarantined, {len(new_modules)} modules imported, sentinel "
               f"{'created' if sentinel.exists() else 'absent'}")
    )  # fmt: skip
    assert not sentinel.exists()
    assert new_modules == set()
    assert len(failures) == len(entries)
    for i in range(len(HOSTILE_NAMES)):
        assert failures[f"hostile-{i}"].startswith("runequeue.errors.UnknownJob")


def test_r11_with_signing_bad_payloads_are_rejected_before_parsing(
    config: QueueConfig, monkeypatch: pytest.MonkeyPatch, results: list[Result], tmp_path: Path
) -> None:
    signed = dataclasses.replace(config, signing_keys=(("k2", "new-secret"), ("k1", "old-secret")))
    ledger = tmp_path / "ledger"
    good = Queue.dispatch(signed, Record(ledger=str(ledger)))
    old_key = dataclasses.replace(config, signing_keys=(("k1", "old-secret"),))
    rotated = Queue.dispatch(old_key, Record(ledger=str(ledger)))  # signed with a retiring key
    forged = (
        b"rq1:k2:AAAA:" + b'{"id":"f","job":"os.system","data":{},"queue":"default","created_at":0}'
    )
    unsigned = (
        b'{"id":"u","job":"tests.Record","data":{"ledger":"/dev/null"},'
        b'"queue":"default","created_at":0}'
    )
    push_raw(
        signed, [Outgoing("forged", "default", forged), Outgoing("unsigned", "default", unsigned)]
    )

    parsed: list[bytes] = []
    real_decode = payload.decode

    def decode(raw: bytes) -> object:
        parsed.append(raw)
        return real_decode(raw)

    monkeypatch.setattr(payload, "decode", decode)
    work(signed, concurrency=1)

    failures = {f.job_id: f.summary for f in failed_jobs(signed)}
    results.append(
        Result("R11", "redis", 4, "a forged and an unsigned payload, signing on", 0, 0, None,
               "both failed with BadSignature, never parsed; a key-rotated job still ran")
    )  # fmt: skip
    assert {e.job_id for e in read_events(ledger)} == {good, rotated}
    assert failures["forged"].startswith("runequeue.errors.BadSignature")
    assert failures["unsigned"].startswith("runequeue.errors.BadSignature")
    assert len(parsed) == 2  # only the two genuine jobs reached the JSON parser


@dataclasses.dataclass
class Blob(Job, name="tests.chaos.Blob"):
    data: str

    async def handle(self) -> None:
        return None


@pytest.mark.parametrize("kind", DRIVERS)
def test_r12_oversized_payloads_are_refused_and_quarantined_unread(
    kind: str, backend_for: Callable[[str], QueueConfig], results: list[Result], tmp_path: Path
) -> None:
    config = backend_for(kind)
    with pytest.raises(PayloadTooLarge):
        Queue.dispatch(config, Blob(data="x" * (2 * 1024 * 1024)))

    baseline_worker = spawn_worker(config, "--max-time", "2", log=tmp_path / "baseline.log")
    baseline = peak_rss_mib(baseline_worker)
    huge = b'{"id":"huge","job":"tests.chaos.Blob","data":{"data":"' + b"x" * (64 << 20) + b'"}}'
    push_raw(config, [Outgoing("huge", "default", huge)])
    del huge
    worker = spawn_worker(config, "--max-time", "3", log=tmp_path / "worker.log")
    peak = peak_rss_mib(worker)

    (failure,) = failed_jobs(config)
    results.append(
        Result("R12", kind, 1, "a 64 MiB payload written into the store; a 2 MiB dispatch", 0, 0,
               None, f"dispatch refused; quarantined unread: worker peak RSS {peak:.0f} MiB "
               f"vs {baseline:.0f} MiB idle")
    )  # fmt: skip
    assert failure.job_id == "huge"
    assert failure.summary.startswith("runequeue.errors.PayloadTooLarge")
    assert len(failure.payload) <= 65536 * 4
    assert peak - baseline < 16
