"""The web dashboard: ``rune dashboard`` serves it; ``runequeue.dashboard.app(config, ...)`` is
the same ASGI app, to mount in a Starlette or FastAPI application.

Needs the ``dashboard`` extra: ``pip install 'runequeue[dashboard]'``.
"""

from runequeue.dashboard.asgi import app

__all__ = ["app"]
