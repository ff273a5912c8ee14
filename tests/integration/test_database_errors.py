"""What a user sees when the database is not what DATABASE_URL says: one line naming the problem
and its fix, on the real PostgreSQL, MariaDB and SQLite.

A missing table says to run `rune migrate`; a missing database or a refused user says to fix
DATABASE_URL instead (and never to run `rune migrate`); no message shows the password.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import sqlalchemy as sa

from runequeue import Queue, QueueConfig
from runequeue.db_engine import create_engine, normalized_url
from runequeue.errors import (
    ConfigError,
    DatabaseAccessDenied,
    DatabaseUnavailable,
    DispatchError,
    MissingDatabase,
    MissingTable,
    RuneQueueError,
)
from runequeue.failed_store import FailedJobStore
from runequeue.schema import metadata, migrate
from tests.conftest import SERVER_URLS
from tests.support.jobs import Record

ROOT = Path(__file__).resolve().parents[2]
SECRET = "s3cret-pw"


def closed_port() -> int:
    """A port on 127.0.0.1 that nothing listens on."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def server_url(kind: str, *, user: str | None = None, password: str | None = None) -> str:
    """The test server of ``kind`` with another user and password (no database yet)."""
    parsed = normalized_url(SERVER_URLS[kind])
    if user is not None:
        parsed = parsed.set(username=user)
    if password is not None:
        parsed = parsed.set(password=password)
    return parsed.render_as_string(hide_password=False)


def store_error(url: str) -> RuneQueueError:
    """What reading the failed-job store of ``url`` raises."""
    store = FailedJobStore(url)
    try:
        with pytest.raises(RuneQueueError) as caught:
            store.all()
    finally:
        store.close()
    return caught.value


def assert_one_line_without_secret(error: BaseException) -> str:
    message = str(error)
    assert "\n" not in message
    assert SECRET not in message
    return message


@pytest.mark.parametrize("kind", ["postgresql", "mysql"])
def test_a_missing_database_says_to_create_it_not_to_migrate(kind: str) -> None:
    url = f"{server_url(kind, password=SECRET if kind == 'mysql' else None)}/rq_no_such_db"
    if kind == "mysql":  # root has no password on the test server
        url = f"{server_url(kind)}/rq_no_such_db"
    error = store_error(url)
    assert isinstance(error, MissingDatabase)
    message = assert_one_line_without_secret(error)
    assert "database 'rq_no_such_db' does not exist on 127.0.0.1:" in message
    assert "fix DATABASE_URL" in message
    assert "migrate" not in message


def test_postgresql_names_the_unknown_role_and_hides_the_password() -> None:
    url = f"{server_url('postgresql', user='nobody', password=SECRET)}/none"
    error = store_error(url)
    assert isinstance(error, DatabaseAccessDenied)
    message = assert_one_line_without_secret(error)
    assert "refused user 'nobody'" in message
    assert 'role "nobody" does not exist' in message
    assert "migrate" not in message


def test_mysql_names_a_wrong_password_without_showing_it() -> None:
    url = f"{server_url('mysql', password=SECRET)}/test"
    error = store_error(url)
    assert isinstance(error, DatabaseAccessDenied)
    message = assert_one_line_without_secret(error)
    assert "refused user 'root'" in message
    assert "fix the user name or password in DATABASE_URL" in message
    assert "migrate" not in message


@pytest.mark.parametrize("kind", ["sqlite", "postgresql", "mysql"])
def test_a_missing_table_is_named_with_rune_migrate(
    kind: str, database_url_for: Callable[[str], str]
) -> None:
    url = database_url_for(kind)
    engine = create_engine(url)
    metadata.tables["failed_jobs"].drop(engine)
    engine.dispose()
    error = store_error(url)
    assert isinstance(error, MissingTable)
    assert "table failed_jobs does not exist in" in str(error)
    assert "run `rune migrate`" in str(error)


@pytest.mark.parametrize("kind", ["postgresql", "mysql"])
def test_an_unreachable_server_is_unavailable_on_one_line(kind: str) -> None:
    port = closed_port()
    url = server_url(kind, password=SECRET).replace(
        str(normalized_url(SERVER_URLS[kind]).port), str(port)
    )
    error = store_error(f"{url}/test")
    assert isinstance(error, DatabaseUnavailable)
    message = assert_one_line_without_secret(error)
    assert f"127.0.0.1:{port}" in message
    assert "migrate" not in message


# Dispatch on the database driver: every one of these is a DispatchError (README's except).


def dispatch_error(config: QueueConfig) -> list[DispatchError]:
    """What dispatch, dispatch_many and dispatch_async raise for ``config``."""
    errors = []
    with pytest.raises(DispatchError) as single:
        Queue.dispatch(config, Record(ledger="unused"))
    errors.append(single.value)
    with pytest.raises(DispatchError) as many:
        Queue.dispatch_many(config, [Record(ledger="unused")] * 2)
    errors.append(many.value)

    async def dispatch_async() -> None:
        try:
            await Queue.dispatch_async(config, Record(ledger="unused"))
        finally:
            await Queue.aclose_connections()

    with pytest.raises(DispatchError) as in_async:
        asyncio.run(dispatch_async())
    errors.append(in_async.value)
    Queue.close_connections()
    return errors


@pytest.mark.parametrize("kind", ["sqlite", "postgresql", "mysql"])
def test_dispatch_to_a_database_without_the_jobs_table_raises_dispatch_error(
    kind: str, database_url_for: Callable[[str], str]
) -> None:
    url = database_url_for(kind)
    engine = create_engine(url)
    metadata.tables["jobs"].drop(engine)
    engine.dispose()
    for error in dispatch_error(QueueConfig(driver="database", database_url=url)):
        assert "table jobs does not exist" in str(error)
        assert "run `rune migrate`" in str(error)


@pytest.mark.parametrize("kind", ["postgresql", "mysql"])
def test_dispatch_to_an_unreachable_database_raises_dispatch_error(kind: str) -> None:
    port = closed_port()
    url = server_url(kind, password=SECRET).replace(
        str(normalized_url(SERVER_URLS[kind]).port), str(port)
    )
    config = QueueConfig(driver="database", database_url=f"{url}/test")
    for error in dispatch_error(config):
        message = assert_one_line_without_secret(error)
        assert f"127.0.0.1:{port}" in message


def test_dispatch_to_a_missing_database_raises_dispatch_error() -> None:
    config = QueueConfig(
        driver="database", database_url=f"{server_url('postgresql')}/rq_no_such_db"
    )
    for error in dispatch_error(config):
        assert "database 'rq_no_such_db' does not exist" in str(error)


# URLs (item 11)


def test_postgres_scheme_is_accepted_as_postgresql(
    database_url_for: Callable[[str], str],
) -> None:
    # A freshly emptied database: the session's is shared with other tests of this process.
    url = database_url_for("postgresql").replace("postgresql://", "postgres://", 1)
    assert normalized_url(url).get_backend_name() == "postgresql"
    migrate(url)
    store = FailedJobStore(url)
    try:
        assert store.all() == []
    finally:
        store.close()


def test_mysql_url_without_a_driver_is_one_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *args: None if name in ("pymysql", "MySQLdb") else real(name, *args),
    )
    with pytest.raises(ConfigError) as caught:
        create_engine("mysql://root@127.0.0.1/test")
    assert str(caught.value) == (
        "no mysql driver is installed; install one with: pip install 'runequeue[mysql]'"
    )


# Read-only use never creates an SQLite file (item 15)


def test_reading_a_missing_sqlite_file_says_so_and_creates_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    error = store_error("sqlite:///runequeue.sqlite3")
    assert isinstance(error, MissingDatabase)
    assert str(error) == (
        f"no runequeue database at ./runequeue.sqlite3 (in {tmp_path}); run `rune migrate` "
        "first, or cd to your application"
    )
    assert not (tmp_path / "runequeue.sqlite3").exists()
    migrate("sqlite:///runequeue.sqlite3")  # the one command that creates it
    assert (tmp_path / "runequeue.sqlite3").exists()
    assert FailedJobStore("sqlite:///runequeue.sqlite3").all() == []


def test_read_only_commands_in_the_wrong_directory_create_no_database(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "QUEUE_DRIVER")}
    env["PYTHONPATH"] = str(ROOT)
    for command in (
        ["queue:failed"],
        ["queue:work", "database", "--import", "tests.support.jobs", "--stop-when-empty"],
    ):
        done = subprocess.run(
            [sys.executable, "-m", "runequeue", *command],
            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert done.returncode != 0
        assert "no runequeue database at ./runequeue.sqlite3" in done.stderr
        assert "Traceback" not in done.stderr
    assert list(tmp_path.iterdir()) == []


def test_in_memory_sqlite_still_works() -> None:
    engine = create_engine("sqlite:///:memory:")
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE t (x INTEGER)"))
        conn.execute(sa.text("INSERT INTO t VALUES (1)"))
        assert conn.execute(sa.text("SELECT x FROM t")).scalar() == 1
    engine.dispose()
