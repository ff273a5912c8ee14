"""A Flask app that dispatches from its views (README: "Flask").

pip install flask
QUEUE_DRIVER=redis flask --app examples.flask_app run
QUEUE_DRIVER=redis flask --app examples.flask_app rune queue:work --import examples.flask_app
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

from flask import Flask, request

from runequeue import Job
from runequeue.integrations.flask import RuneQueue

log = logging.getLogger(__name__)
queue = RuneQueue()


@dataclasses.dataclass
class SendWelcome(Job, name="examples.flask.SendWelcome"):
    email: str

    async def handle(self) -> None:
        log.info("welcome mail to %s", self.email)


def create_app(settings: dict[str, Any] | None = None) -> Flask:
    """The app; ``settings`` go to ``app.config["RUNEQUEUE"]`` (over the environment's)."""
    app = Flask(__name__)
    app.config["RUNEQUEUE"] = settings or {}
    queue.init_app(app)

    @app.post("/signup")
    def signup() -> dict[str, str]:
        return {"queued": queue.dispatch(SendWelcome(request.form["email"]))}

    return app


app = create_app()
