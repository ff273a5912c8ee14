"""runequeue in a Starlette or FastAPI application: a lifespan that holds the queue's
configuration for the app's handlers and closes the connections dispatch opened, and the
dependency handlers take it from::

    from typing import Annotated
    from fastapi import Depends, FastAPI
    from runequeue import Queue, QueueConfig
    from runequeue.integrations.asgi import queue_config, queue_lifespan

    app = FastAPI(lifespan=queue_lifespan(QueueConfig.from_env()))
    Queued = Annotated[QueueConfig, Depends(queue_config)]

    @app.post("/signup")
    async def signup(email: str, config: Queued) -> dict[str, str]:
        job_id = await Queue.dispatch_async(config, SendWelcomeEmail(email))
        return {"job": job_id}

The configuration is read once, at start (not per request), and ``dispatch_async``'s
connections belong to the app's event loop, so they are closed on that loop at shutdown.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

from starlette.requests import HTTPConnection

from runequeue.config import QueueConfig
from runequeue.queue import Queue

STATE_KEY = "runequeue"  # app.state.runequeue: the configuration


def queue_lifespan(
    config: QueueConfig,
    then: Callable[[Any], contextlib.AbstractAsyncContextManager[Any]] | None = None,
) -> Callable[[Any], contextlib.AbstractAsyncContextManager[None]]:
    """A lifespan for ``Starlette(lifespan=...)`` or ``FastAPI(lifespan=...)``: it puts
    ``config`` on ``app.state``, runs the application's own lifespan ``then`` inside, and at
    shutdown closes the connections ``Queue.dispatch_async`` (and ``dispatch``) opened."""

    @contextlib.asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[None]:
        setattr(app.state, STATE_KEY, config)
        try:
            if then is None:
                yield
            else:
                async with then(app):
                    yield
        finally:
            await Queue.aclose_connections()
            Queue.close_connections()

    return lifespan


def queue_config(request: HTTPConnection) -> QueueConfig:
    """The application's queue configuration, for ``Depends(queue_config)`` (or call it with
    the request in a Starlette handler)."""
    config = getattr(request.app.state, STATE_KEY, None)
    if not isinstance(config, QueueConfig):
        raise RuntimeError("no queue configuration on this app: create it with "
                           "lifespan=queue_lifespan(QueueConfig.from_env())")  # fmt: skip
    return config
