"""Issue 10 follow-up: a PostgreSQL worker whose LISTEN connection is refused polls instead.

The worker opens a connection of its own for LISTEN, besides the pool's. When the server refuses
that one (max_connections reached, a role's connection limit) the jobs are still reachable through
the pool: the worker must keep taking them, warn once, and listen again once it can. A role with
``CONNECTION LIMIT 1`` makes the server refuse exactly the second connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import threading
import uuid
from collections.abc import Callable, Coroutine, Iterator
from typing import Any

import pytest
import sqlalchemy as sa

from runequeue.db_engine import create_engine
from runequeue.drivers import database
from runequeue.drivers.base import Batch, Outgoing
from runequeue.drivers.database import DatabaseDriver, DatabaseQueue
from runequeue.errors import DriverUnavailable

FALLBACK = "polling for jobs instead"


@pytest.fixture
def admin_url(database_url_for: Callable[[str], str]) -> str:
    """A migrated PostgreSQL database of the session's own, as the superuser."""
    return database_url_for("postgresql")


@pytest.fixture
def one_connection_url(admin_url: str) -> Iterator[str]:
    """``admin_url`` as a role the server lets hold one connection at a time."""
    role = f"rq_listen_{uuid.uuid4().hex[:10]}"
    admin = create_engine(admin_url).execution_options(isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f"CREATE ROLE {role} LOGIN CONNECTION LIMIT 1"))
        conn.execute(sa.text(f"GRANT ALL ON ALL TABLES IN SCHEMA public TO {role}"))
        conn.execute(sa.text(f"GRANT ALL ON ALL SEQUENCES IN SCHEMA public TO {role}"))
    try:
        url = sa.make_url(admin_url).set(username=role)
        yield url.render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f"DROP OWNED BY {role}"))
            conn.execute(sa.text(f"DROP ROLE {role}"))
        admin.dispose()


def _set_connection_limit(admin_url: str, role: str, limit: int) -> None:
    admin = create_engine(admin_url).execution_options(isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(sa.text(f"ALTER ROLE {role} CONNECTION LIMIT {limit}"))
    finally:
        admin.dispose()


def _listening_connections(admin_url: str, role: str) -> int:
    admin = create_engine(admin_url)
    try:
        with admin.connect() as conn:
            query = sa.text(
                "SELECT count(*) FROM pg_stat_activity WHERE usename = :role "
                "AND query LIKE 'LISTEN %'"
            )
            return int(conn.execute(query, {"role": role}).scalar_one())
    finally:
        admin.dispose()


def _fallbacks(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [record for record in caplog.records if FALLBACK in record.getMessage()]


async def _reserve(driver: DatabaseDriver) -> Batch:
    return await driver.reserve("default", 1, lease_s=30, default_tries=3)


def _run_within(bound_s: float, scenario: Coroutine[Any, Any, None], what: str) -> None:
    """Run ``scenario`` in a thread of its own; fail if it is still running after ``bound_s``.

    A thread, so that a scenario blocked in a connect cannot hang the test run itself.
    """
    raised: list[BaseException] = []

    def run() -> None:
        try:
            asyncio.run(scenario)
        except BaseException as exc:
            raised.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(bound_s)
    assert not thread.is_alive(), f"{what} did not end within {bound_s} s"
    if raised:
        raise raised[0]


def test_a_refused_listen_falls_back_to_polling_and_warns_once(
    one_connection_url: str, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(database, "LISTEN_AGAIN_S", 0.0)  # try LISTEN at every reserve

    async def scenario() -> list[str]:
        driver = DatabaseDriver(one_connection_url)
        try:
            # The pool's connection is the role's one: every LISTEN below is refused.
            await driver.push([Outgoing(f"job-{n}", "default", b"{}") for n in range(3)])
            taken = []
            for _ in range(3):
                taken += [job.job_id for job in (await _reserve(driver)).jobs]
                await driver.wait(["default"], 0.1)  # polls: returns, raises nothing
            return taken
        finally:
            await driver.close()

    with caplog.at_level(logging.INFO, logger="runequeue"):
        taken = asyncio.run(scenario())

    assert taken == ["job-0", "job-1", "job-2"]
    (warning,) = _fallbacks(caplog)  # once, not at every reserve
    assert warning.levelno == logging.WARNING
    assert "too many connections" in warning.getMessage()
    assert "\n" not in warning.getMessage()


def test_the_worker_listens_again_once_the_server_lets_it(
    admin_url: str,
    one_connection_url: str,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(database, "LISTEN_AGAIN_S", 0.0)
    role = str(sa.make_url(one_connection_url).username)

    async def scenario() -> None:
        driver = DatabaseDriver(one_connection_url)
        try:
            await driver.push([Outgoing("first", "default", b"{}")])
            assert [job.job_id for job in (await _reserve(driver)).jobs] == ["first"]
            assert _listening_connections(admin_url, role) == 0
            _set_connection_limit(admin_url, role, 2)
            assert (await _reserve(driver)).jobs == []
            assert _listening_connections(admin_url, role) == 1
            # Listening: another process's push ends a wait that would otherwise last 60 s.
            pusher = DatabaseQueue(admin_url)
            try:
                pusher.push([Outgoing("second", "default", b"{}")])
            finally:
                pusher.close()
            await driver.wait(["default"], 60)
        finally:
            await driver.close()

    with caplog.at_level(logging.INFO, logger="runequeue"):
        _run_within(30, scenario(), "a wait that only a NOTIFY ends")
    assert len(_fallbacks(caplog)) == 1
    assert any("listening for new jobs again" in r.getMessage() for r in caplog.records)


@contextlib.contextmanager
def _silent_server() -> Iterator[int]:
    """A TCP port that takes connections and never answers, like a host that hangs."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    try:
        yield server.getsockname()[1]
    finally:
        server.close()  # resets the connections it never accepted


def test_a_listen_to_a_server_that_never_answers_gives_up(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The LISTEN connection has the engine's connect timeout, so a reserve cannot hang (until
    the OS's TCP timeout, minutes) on a server that never answers."""
    monkeypatch.setattr(database, "LISTEN_CONNECT_TIMEOUT_S", 2)  # psycopg's shortest

    async def reserve(url: str) -> None:
        driver = DatabaseDriver(url)
        try:
            await _reserve(driver)
        finally:
            await driver.close()

    with _silent_server() as port, caplog.at_level(logging.WARNING, logger="runequeue"):
        url = f"postgresql://postgres@127.0.0.1:{port}/nothing"
        # The pool's connection times out as well (after 5 s): the worker would back off.
        with pytest.raises(DriverUnavailable):
            _run_within(60, reserve(url), "a reserve from a server that never answers")

    (warning,) = _fallbacks(caplog)
    assert "timeout" in warning.getMessage().lower()


@pytest.mark.parametrize(
    ("url", "listens"),
    [
        ("postgresql://u@h/db", True),  # psycopg 3 is installed, and preferred
        ("postgres://u@h/db", True),
        ("postgresql+psycopg://u@h/db", True),
        ("postgresql+psycopg2://u@h/db", False),  # no notifies() to wait on: polled
        ("mysql://u@h/db", False),
        ("sqlite:///jobs.sqlite3", False),
    ],
)
def test_only_psycopg_3_connections_wait_for_notify(url: str, listens: bool) -> None:
    """What the worker does (`DatabaseDriver`) and what the wake-up tests expect (``polled``)."""
    assert database.notified(url) is listens
