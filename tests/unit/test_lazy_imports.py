"""`import runequeue` and a dispatch load only what the configured backend needs: a web app that
dispatches to Redis never pays for SQLAlchemy, one on the database driver never loads redis-py."""

from __future__ import annotations

import subprocess
import sys

from tests.workers import ROOT

HEAVY = ("sqlalchemy", "redis", "hiredis")


def _output(script: str) -> str:
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, check=True
    )
    return done.stdout.strip()


def _loaded_after(code: str) -> set[str]:
    return set(
        _output(f"import sys\n{code}\nprint(*(m for m in {HEAVY!r} if m in sys.modules))").split()
    )


def test_import_loads_no_backend_library() -> None:
    assert _loaded_after("import runequeue") == set()


def test_demo_jobs_are_not_registered_by_the_cli() -> None:
    assert _output("import runequeue.cli, runequeue.job as j; print(j.registered_count())") == "0"


def test_dispatch_to_redis_does_not_load_sqlalchemy(redis_url: str) -> None:
    code = (
        "from runequeue import Queue, QueueConfig\n"
        "from tests.support.jobs import TypedUser\n"
        f"Queue.dispatch(QueueConfig(driver='redis', redis_url={redis_url!r}, "
        "redis_prefix='lazy-imports'), TypedUser(user_id=1))"
    )
    assert "sqlalchemy" not in _loaded_after(code)


def test_dispatch_to_a_database_does_not_load_redis(sqlite_url: str) -> None:
    code = (
        "from runequeue import Queue, QueueConfig\n"
        "from tests.support.jobs import TypedUser\n"
        f"Queue.dispatch(QueueConfig(driver='database', database_url={sqlite_url!r}), "
        "TypedUser(user_id=1))"
    )
    assert not {"redis", "hiredis"} & _loaded_after(code)


def test_the_database_driver_works_without_the_postgres_extra(sqlite_url: str) -> None:
    """psycopg is the optional `postgres` extra: a plain install (`rune demo`, SQLite) must not
    need it. Blocked here as if it were not installed."""
    code = (
        "import sys; sys.modules['psycopg'] = None\n"
        "import asyncio\n"
        "from runequeue.drivers.database import DatabaseDriver\n"
        f"driver = DatabaseDriver({sqlite_url!r})\n"
        "print(asyncio.run(driver.reserve('default', 1, lease_s=30, default_tries=3)).jobs)\n"
        "asyncio.run(driver.close())"
    )
    assert _output(code) == "[]"
