"""After-commit dispatch on Redis: held until the caller's transaction commits (a SQLAlchemy
Session, or a Django atomic block), dropped on rollback, sent at once with none open."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session

from runequeue import Job, Queue, QueueConfig
from runequeue.errors import DispatchError


@dataclasses.dataclass
class Receipt(Job, name="tests.after_commit.Receipt"):
    order: int

    async def handle(self) -> None:
        return None


@dataclasses.dataclass
class AlwaysAfterCommit(Job, name="tests.after_commit.AlwaysAfterCommit"):
    order: int
    after_commit: ClassVar[bool] = True

    async def handle(self) -> None:
        return None


@pytest.fixture
def session(tmp_path: Path) -> Iterator[Session]:
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'app.db'}")
    with engine.connect() as conn:
        conn.execute(sa.text("CREATE TABLE orders (id INTEGER PRIMARY KEY)"))
        conn.commit()
    with Session(engine) as session:
        yield session
    engine.dispose()


def test_held_until_the_session_commits(config: QueueConfig, session: Session) -> None:
    session.execute(sa.text("INSERT INTO orders (id) VALUES (1)"))
    job_id = Queue.dispatch(config, Receipt(1), after_commit=True, connection=session)
    assert len(job_id) == 32 and Queue.size(config) == 0  # not before the commit
    session.commit()
    assert Queue.size(config) == 1


def test_dropped_on_rollback(config: QueueConfig, session: Session) -> None:
    session.execute(sa.text("INSERT INTO orders (id) VALUES (1)"))
    Queue.dispatch(config, Receipt(1), after_commit=True, connection=session)
    session.rollback()
    session.execute(sa.text("INSERT INTO orders (id) VALUES (2)"))
    session.commit()  # a later commit does not send what the rollback dropped
    assert Queue.size(config) == 0


def test_sent_at_once_with_no_transaction_open(config: QueueConfig, session: Session) -> None:
    assert not session.in_transaction()
    Queue.dispatch(config, Receipt(1), after_commit=True, connection=session)
    Queue.dispatch(config, AlwaysAfterCommit(2))  # the class option, no transaction anywhere
    assert Queue.size(config) == 2


def test_a_send_that_fails_at_commit_is_raised_by_the_commit(
    config: QueueConfig, session: Session
) -> None:
    away = dataclasses.replace(config, redis_url="redis://127.0.0.1:1/0", dispatch_timeout_s=1)
    session.execute(sa.text("INSERT INTO orders (id) VALUES (1)"))
    Queue.dispatch(away, Receipt(1), after_commit=True, connection=session)
    with pytest.raises(DispatchError):
        session.commit()


def test_a_django_atomic_block(config: QueueConfig) -> None:
    django = _django()
    from django.db import transaction

    with transaction.atomic():
        Queue.dispatch(config, AlwaysAfterCommit(1))
        assert Queue.size(config) == 0
    assert Queue.size(config) == 1
    with pytest.raises(RuntimeError), transaction.atomic():
        Queue.dispatch(config, Receipt(2), after_commit=True)
        raise RuntimeError("the view failed")
    assert Queue.size(config) == 1  # rolled back: dropped
    assert django is not None


def test_the_fake_records_at_once(config: QueueConfig, session: Session) -> None:
    with Queue.fake() as fake:
        session.execute(sa.text("INSERT INTO orders (id) VALUES (1)"))
        Queue.dispatch(config, Receipt(1), after_commit=True, connection=session)
        fake.assert_dispatched(Receipt)
        session.rollback()


def _django() -> Any:
    import django
    from django.conf import settings

    if not settings.configured:
        settings.configure(DATABASES={"default": {"ENGINE": "django.db.backends.sqlite3",
                                                  "NAME": ":memory:"}}, USE_TZ=True)  # fmt: skip
        django.setup()
    return django
