"""The jobs table's partial indexes (PostgreSQL, SQLite): `rune migrate` gives them to a table
made with full ones, and the queries that need them can use them (their states are written into
the SQL, where a bound parameter would hide them from the planner)."""

from __future__ import annotations

from collections.abc import Callable
from typing import cast

import pytest
import sqlalchemy as sa
from sqlalchemy.sql.compiler import SQLCompiler

from runequeue.db_engine import create_engine
from runequeue.drivers import sql
from runequeue.schema import RECOVERED, run_migrations

FULL_INDEXES = [
    "DROP INDEX jobs_ready",
    "DROP INDEX jobs_leases",
    "DROP INDEX jobs_dead",
    "DROP INDEX jobs_recovered",
    "CREATE INDEX jobs_ready ON jobs (queue, state, available_at, id)",
    "CREATE INDEX jobs_leases ON jobs (state, lease_expires_at)",
]


def index_definitions(engine: sa.Engine) -> dict[str, str]:
    with engine.connect() as conn:
        if engine.dialect.name == "postgresql":
            query = "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'jobs'"
        else:
            query = "SELECT name, sql FROM sqlite_master WHERE type = 'index' AND tbl_name = 'jobs'"
        return {name: ddl for name, ddl in conn.execute(sa.text(query)).all() if ddl}


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_migrate_gives_an_old_jobs_table_its_partial_indexes(
    kind: str, database_url_for: Callable[[str], str]
) -> None:
    url = database_url_for(kind)
    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            conn.execute(sa.text(
                "INSERT INTO jobs (uuid, queue, payload, payload_bytes, state, attempts, "
                "available_at, created_at) VALUES ('kept', 'q', '{}', 2, 0, 0, 0, 0)"
            ))  # fmt: skip
            for statement in FULL_INDEXES:
                conn.execute(sa.text(statement))
        assert run_migrations(url).upgraded == ["jobs"]
        definitions = index_definitions(engine)
        for name in ("jobs_ready", "jobs_leases", "jobs_dead", "jobs_recovered"):
            assert " WHERE " in definitions[name].upper(), definitions[name]
        assert run_migrations(url).upgraded == []  # once only
        with engine.connect() as conn:
            assert conn.execute(sa.text("SELECT uuid FROM jobs")).scalars().all() == ["kept"]
    finally:
        engine.dispose()


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_reserve_recovery_and_the_outbox_are_planned_on_the_partial_indexes(
    kind: str, database_url_for: Callable[[str], str]
) -> None:
    engine = create_engine(database_url_for(kind))
    queries: dict[str, sa.ClauseElement] = {
        "jobs_ready": sql.select_ready(kind, "q", 10),
        "jobs_recovered": sql.select_ready(kind, "q", 1, RECOVERED),
        "jobs_leases": cast(sa.ClauseElement, sql.expire_leases(kind, "q", 3)[1]),
        "jobs_dead": sql.buried(kind, "q", 10),
    }
    try:
        with engine.connect() as conn:
            if kind == "postgresql":
                conn.execute(sa.text("SET enable_seqscan = off"))  # an empty table: no shortcut
            for index, query in queries.items():
                compiled = cast(SQLCompiler, query.compile(dialect=engine.dialect))
                explain = "EXPLAIN " if kind == "postgresql" else "EXPLAIN QUERY PLAN "
                params = compiled.params
                if compiled.positional:  # SQLite's "?" take a tuple
                    params = tuple(params[name] for name in compiled.positiontup or ())
                plan = conn.exec_driver_sql(explain + str(compiled), params).all()
                assert index in " ".join(str(row) for row in plan), plan
    finally:
        engine.dispose()
