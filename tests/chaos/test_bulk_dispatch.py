"""R25: a bulk dispatch that fails has stored nothing (issue 11, item 4).

``dispatch_many`` of 2,500 jobs against a Redis at its memory limit used to raise `DispatchError`
after 1,000 of them were stored (and later ran): a caller who retried duplicated them, one who gave
up had work it was told failed. Each connection's share of a batch is now stored whole or not at
all: one MULTI/EXEC transaction on Redis, one transaction on a database. Jobs that go to another
connection (a job class naming its own) cannot share that transaction: the error lists them.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable
from pathlib import Path

import pytest
import redis
import sqlalchemy as sa

from runequeue import Job, Queue, QueueConfig
from runequeue.db_engine import create_engine
from runequeue.drivers.redis import QueueKeys
from runequeue.errors import DispatchError
from tests.chaos.report import Result
from tests.support.jobs import Record
from tests.support.servers import OwnRedis

BATCH = 2500
PADDING = "p" * 1000  # about 1 KB a job: a few batches fill the server's 8 MB


@dataclasses.dataclass
class RecordOnDatabase(Job, name="tests.bulk.RecordOnDatabase"):
    """A job whose class sends it to the database connection, whatever the config's driver."""

    ledger: str
    connection = "database"

    async def handle(self) -> None:  # never run: the test only dispatches
        raise AssertionError("not run here")


async def _dispatch_async(config: QueueConfig, jobs: list[Record]) -> None:
    try:
        await Queue.dispatch_many_async(config, jobs)
    finally:
        await Queue.aclose_connections()


def _stored(config: QueueConfig) -> int:
    client = redis.Redis.from_url(config.redis_url)
    try:
        return int(client.hlen(QueueKeys.of(config.redis_prefix, "default").payload))
    finally:
        client.close()


@pytest.mark.parametrize("api", ["blocking", "async"])
def test_r25_a_bulk_dispatch_refused_for_memory_stored_nothing(
    api: str, small_redis: OwnRedis, tmp_path: Path, results: list[Result]
) -> None:
    config = QueueConfig(driver="redis", redis_url=small_redis.url, redis_prefix="r25")
    ledger = str(tmp_path / "ledger")
    accepted, error = 0, None
    for _ in range(20):  # 8 MB holds about three batches: bounded, whatever the overhead
        jobs = [Record(ledger=ledger, tag=PADDING) for _ in range(BATCH)]
        try:
            if api == "blocking":
                Queue.dispatch_many(config, jobs)
            else:
                asyncio.run(_dispatch_async(config, jobs))
        except DispatchError as exc:
            error = exc
            break
        accepted += 1
    stored = _stored(config)
    results.append(
        Result("R25", "redis", stored, f"dispatch_many ({api}) of {BATCH} 1 KB jobs until an "
               "8 MB noeviction Redis refused one", 0, 0, None,
               f"{accepted} batches accepted, {stored} jobs stored; the refused batch stored 0")
    )  # fmt: skip
    assert error is not None, "Redis never refused a batch: the memory limit was not reached"
    assert "is out of memory" in str(error)
    assert stored == accepted * BATCH  # nothing of the refused batch


_TRIGGERS = {
    "sqlite": [
        "CREATE TRIGGER refuse_poison BEFORE INSERT ON jobs WHEN NEW.payload LIKE '%poison%' "
        "BEGIN SELECT RAISE(ABORT, 'poison row refused'); END"
    ],
    "postgresql": [
        "CREATE OR REPLACE FUNCTION refuse_poison() RETURNS trigger AS $$ BEGIN "
        "IF NEW.payload LIKE '%poison%' THEN RAISE EXCEPTION 'poison row refused'; END IF; "
        "RETURN NEW; END $$ LANGUAGE plpgsql",
        "CREATE TRIGGER refuse_poison BEFORE INSERT ON jobs FOR EACH ROW "
        "EXECUTE FUNCTION refuse_poison()",
    ],
    "mysql": [
        "CREATE TRIGGER refuse_poison BEFORE INSERT ON jobs FOR EACH ROW BEGIN "
        "IF NEW.payload LIKE '%poison%' THEN "
        "SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = 'poison row refused'; END IF; END"
    ],
}


@pytest.mark.parametrize("database", ["sqlite", "postgresql", "mysql"])
def test_r25_a_batch_refused_mid_insert_stored_nothing(
    database: str,
    backend_for: Callable[[str], QueueConfig],
    tmp_path: Path,
    results: list[Result],
) -> None:
    config = backend_for(f"database-{database}")
    engine = create_engine(config.database_url)
    with engine.begin() as conn:
        for statement in _TRIGGERS[database]:
            conn.execute(sa.text(statement))
    ledger = str(tmp_path / "ledger")
    jobs = [Record(ledger=ledger) for _ in range(BATCH)]
    jobs[BATCH * 3 // 5] = Record(ledger=ledger, tag="poison")  # refused by the database

    with pytest.raises(DispatchError, match="poison row refused"):
        Queue.dispatch_many(config, jobs)
    with engine.connect() as conn:
        stored = int(conn.execute(sa.text("SELECT COUNT(*) FROM jobs")).scalar_one())
    engine.dispose()
    results.append(
        Result("R25", f"database-{database}", BATCH, f"dispatch_many of {BATCH} jobs, the "
               f"{BATCH * 3 // 5 + 1}th refused by a trigger", 0, 0, None,
               f"DispatchError; {stored} of the batch stored")
    )  # fmt: skip
    assert stored == 0


def test_r25_the_error_names_the_jobs_other_connections_stored(
    config: QueueConfig, tmp_path: Path
) -> None:
    # The database connection is a file nobody migrated: its share of the batch is refused.
    config = dataclasses.replace(config, database_url=f"sqlite:///{tmp_path / 'none.sqlite3'}")
    ledger = str(tmp_path / "ledger")
    on_redis = [Record(ledger=ledger) for _ in range(3)]
    on_database = [RecordOnDatabase(ledger=ledger) for _ in range(2)]

    with pytest.raises(DispatchError) as refused:
        Queue.dispatch_many(config, [*on_redis, *on_database])

    assert len(refused.value.stored) == 3
    assert Queue.size(config) == 3
    client = redis.Redis.from_url(config.redis_url)
    payloads = QueueKeys.of(config.redis_prefix, "default").payload
    assert all(client.hexists(payloads, job_id) for job_id in refused.value.stored)
    client.close()
    assert "3 jobs were already stored on other connections" in str(refused.value)
