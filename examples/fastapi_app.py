"""A FastAPI app that dispatches from its handlers (README: "FastAPI and Starlette").

Run it with uvicorn (``pip install fastapi uvicorn``), with a worker beside it:

    QUEUE_DRIVER=redis uvicorn examples.fastapi_app:app
    QUEUE_DRIVER=redis rune queue:work --import examples.fastapi_app
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Annotated

from fastapi import Depends, FastAPI

from runequeue import Job, Queue, QueueConfig
from runequeue.integrations.asgi import queue_config, queue_lifespan

log = logging.getLogger(__name__)
Queued = Annotated[QueueConfig, Depends(queue_config)]  # the app's queue, for its handlers


@dataclasses.dataclass
class SendWelcomeEmail(Job, name="examples.SendWelcomeEmail"):
    email: str
    tries = 3

    async def handle(self) -> None:
        log.info("welcome mail to %s", self.email)


def create_app(config: QueueConfig | None = None) -> FastAPI:
    """The app, on ``config`` (default: the environment's, read once at import)."""
    app = FastAPI(lifespan=queue_lifespan(config or QueueConfig.from_env()))

    @app.post("/signup")
    async def signup(email: str, queue: Queued) -> dict[str, str]:
        job_id = await Queue.dispatch_async(queue, SendWelcomeEmail(email))
        return {"queued": job_id}

    return app


app = create_app()
