"""After-commit dispatch, on any driver: ``Queue.dispatch(config, job, after_commit=True)`` (or a
job class's ``after_commit = True``) holds the job until the surrounding transaction commits,
and drops it if that transaction rolls back.

The surrounding transaction is:

- the SQLAlchemy ``Session`` (or ``AsyncSession``) given as ``connection=``, when the job does
  not go to the database driver (there ``connection=`` writes the job in the transaction itself,
  which is stronger: see `runequeue.transactional`);
- else Django's, when a Django ``atomic`` block is open on the default database
  (``transaction.on_commit``).

With none open, the job is dispatched at once. The job is validated and encoded at the call, so
a job that could not be stored fails there; only the sending waits. One window remains: the
commit succeeded and the process died before the send. Transactional dispatch (the database
driver with ``connection=``) closes it.

A send that fails at commit raises from the commit call (``session.commit()``), after the
application's data is committed: loud, never a job silently dropped.
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Callable
from typing import Any

from runequeue.errors import ConfigError

Send = Callable[[], object]
_PENDING = "runequeue.after_commit"  # the Session.info key of its held sends


def hold(send: Send, connection: object | None) -> bool:
    """Run ``send`` once the surrounding transaction commits (never, if it rolls back); whether
    it was held. ``False``: no transaction is open, and the caller sends now."""
    if connection is not None:
        return _hold_on_session(send, connection)
    return _hold_on_django(send)


def _hold_on_session(send: Send, connection: object) -> bool:
    from sqlalchemy.orm import Session

    session = getattr(connection, "sync_session", connection)  # an AsyncSession's own
    if not isinstance(session, Session):
        kind = type(connection).__name__
        raise ConfigError(
            f"after_commit with connection= needs a SQLAlchemy Session or AsyncSession (whose "
            f"commit it can follow), not a {kind}"
        )
    if not session.in_transaction():
        return False
    pending: list[Send] | None = session.info.get(_PENDING)
    if pending is None:
        pending = session.info[_PENDING] = []
        _follow(session)
    pending.append(send)
    return True


def _follow(session: Any) -> None:
    """Send the held jobs after each commit of ``session``; forget them at a rollback."""
    from sqlalchemy import event

    def committed(session: Any) -> None:
        held, session.info[_PENDING] = session.info.get(_PENDING, []), []
        for send in held:
            send()

    def rolled_back(session: Any, *args: Any) -> None:
        session.info[_PENDING] = []

    event.listen(session, "after_commit", committed)
    event.listen(session, "after_rollback", rolled_back)
    event.listen(session, "after_soft_rollback", rolled_back)


def _hold_on_django(send: Send) -> bool:
    if "django" not in sys.modules and importlib.util.find_spec("django") is None:
        return False
    from django.conf import settings

    if not settings.configured:
        return False
    from django.db import transaction

    if not transaction.get_connection().in_atomic_block:
        return False
    transaction.on_commit(send)
    return True
