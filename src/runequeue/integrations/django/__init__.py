"""runequeue in a Django project: add ``"runequeue.integrations.django"`` to ``INSTALLED_APPS``.

- Settings: ``RUNEQUEUE = {"driver": "redis", ...}`` holds `QueueConfig` fields, over the
  environment's (``QUEUE_DRIVER``, ``REDIS_URL``...). Without a ``database_url``, failed jobs (and
  the database driver's queue) go to Django's ``default`` database.
- Jobs: each installed app's ``jobs`` module is imported at start, so its job classes are
  registered (``python manage.py rune queue:work`` needs no ``--import``).
- ``python manage.py rune ...`` runs every ``rune`` command on that configuration;
  ``python manage.py rune migrate`` creates runequeue's tables in Django's database.
- ``dispatch(job)`` dispatches on it; inside ``transaction.atomic()``, ``after_commit=True`` (or a
  job class's ``after_commit = True``) waits for the commit (``transaction.on_commit``).
"""

from __future__ import annotations

from typing import Any, Unpack

from runequeue.config import QueueConfig
from runequeue.job import Job
from runequeue.queue import DispatchOptions, Queue

_ENGINES = {"sqlite3": "sqlite", "postgresql": "postgresql", "mysql": "mysql"}


def queue_config() -> QueueConfig:
    """The project's queue configuration, from ``settings.RUNEQUEUE`` and the environment."""
    from django.conf import settings

    values: dict[str, Any] = dict(getattr(settings, "RUNEQUEUE", None) or {})
    if "database_url" not in values:
        values["database_url"] = database_url(settings.DATABASES["default"])
    return QueueConfig.from_env(**values)


def database_url(database: dict[str, Any]) -> str:
    """A SQLAlchemy URL for one of Django's ``DATABASES`` entries."""
    import sqlalchemy as sa

    engine = str(database.get("ENGINE", "")).rsplit(".", 1)[-1]
    backend = _ENGINES.get(engine)
    if backend is None:
        raise ValueError(f"runequeue cannot use Django's {engine!r} database: set "
                         "RUNEQUEUE['database_url']")  # fmt: skip
    port = database.get("PORT")
    return sa.URL.create(
        backend, username=database.get("USER") or None, password=database.get("PASSWORD") or None,
        host=database.get("HOST") or None, port=int(port) if port else None,
        database=str(database.get("NAME") or "") or None,
    ).render_as_string(hide_password=False)  # fmt: skip


def dispatch(job: Job, **options: Unpack[DispatchOptions]) -> str:
    """`Queue.dispatch` on the project's configuration."""
    return Queue.dispatch(queue_config(), job, **options)
